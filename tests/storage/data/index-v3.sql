BEGIN TRANSACTION;
CREATE TABLE blob_writes (blob_key TEXT PRIMARY KEY, at TEXT NOT NULL, write TEXT);
CREATE TABLE instances (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    record TEXT NOT NULL,
    metadata BLOB
);
INSERT INTO "instances" VALUES('1.2.v3.1.1.0','1.2.v3.1','1.2.v3.1.1','CT','1.2.840.10008.5.1.4.1.1.2','{"study_uid":"1.2.v3.1","series_uid":"1.2.v3.1.1","sop_uid":"1.2.v3.1.1.0","sop_class_uid":"1.2.840.10008.5.1.4.1.1.2","transfer_syntax_uid":"1.2.840.10008.1.2.1","blob_key":"1.2.v3.1/1.2.v3.1.1/0.dcm","size":1000,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","study_tags":{"0020000D":{"vr":"UI","Value":["1.2.v3.1"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^Jane"}]},"00100020":{"vr":"LO","Value":["PAT-1"]},"00080020":{"vr":"DA","Value":["20240102"]},"00080050":{"vr":"SH","Value":["ACC-1"]}},"series_tags":{"0020000E":{"vr":"UI","Value":["1.2.v3.1.1"]},"00080060":{"vr":"CS","Value":["CT"]}},"instance_tags":{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080018":{"vr":"UI","Value":["1.2.v3.1.1.0"]}},"orthanc_ids":{"patient":"patient-id","study":"study-1.2.v3.1","series":"series-1.2.v3.1.1","instance":"instance-1.2.v3.1.1.0"},"has_file_meta":true,"metadata_key":null,"metadata_size":0,"pixel":{},"bulk":{},"stored_at":"2026-12-07T05:21:10.247Z"}',NULL);
INSERT INTO "instances" VALUES('1.2.v3.1.1.2','1.2.v3.1','1.2.v3.1.1','CT','1.2.840.10008.5.1.4.1.1.2','{"study_uid":"1.2.v3.1","series_uid":"1.2.v3.1.1","sop_uid":"1.2.v3.1.1.2","sop_class_uid":"1.2.840.10008.5.1.4.1.1.2","transfer_syntax_uid":"1.2.840.10008.1.2.1","blob_key":"1.2.v3.1/1.2.v3.1.1/2.dcm","size":1002,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","study_tags":{"0020000D":{"vr":"UI","Value":["1.2.v3.1"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^Jane"}]},"00100020":{"vr":"LO","Value":["PAT-1"]},"00080020":{"vr":"DA","Value":["20240102"]},"00080050":{"vr":"SH","Value":["ACC-1"]}},"series_tags":{"0020000E":{"vr":"UI","Value":["1.2.v3.1.1"]},"00080060":{"vr":"CS","Value":["CT"]}},"instance_tags":{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080018":{"vr":"UI","Value":["1.2.v3.1.1.2"]}},"orthanc_ids":{"patient":"patient-id","study":"study-1.2.v3.1","series":"series-1.2.v3.1.1","instance":"instance-1.2.v3.1.1.2"},"has_file_meta":true,"metadata_key":null,"metadata_size":0,"pixel":{},"bulk":{},"stored_at":"2026-12-07T05:21:10.252Z"}',NULL);
INSERT INTO "instances" VALUES('1.2.v3.1.2.3','1.2.v3.1','1.2.v3.1.2','CT','1.2.840.10008.5.1.4.1.1.2','{"study_uid":"1.2.v3.1","series_uid":"1.2.v3.1.2","sop_uid":"1.2.v3.1.2.3","sop_class_uid":"1.2.840.10008.5.1.4.1.1.2","transfer_syntax_uid":"1.2.840.10008.1.2.4.50","blob_key":"1.2.v3.1/1.2.v3.1.2/3.dcm","size":1003,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","study_tags":{"0020000D":{"vr":"UI","Value":["1.2.v3.1"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^Jane"}]},"00100020":{"vr":"LO","Value":["PAT-1"]},"00080020":{"vr":"DA","Value":["20240102"]},"00080050":{"vr":"SH","Value":["ACC-1"]}},"series_tags":{"0020000E":{"vr":"UI","Value":["1.2.v3.1.2"]},"00080060":{"vr":"CS","Value":["CT"]}},"instance_tags":{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080018":{"vr":"UI","Value":["1.2.v3.1.2.3"]}},"orthanc_ids":{"patient":"patient-id","study":"study-1.2.v3.1","series":"series-1.2.v3.1.2","instance":"instance-1.2.v3.1.2.3"},"has_file_meta":false,"metadata_key":null,"metadata_size":0,"pixel":{},"bulk":{},"stored_at":"2026-12-07T05:21:10.252Z"}',NULL);
INSERT INTO "instances" VALUES('1.2.v3.1.2.4','1.2.v3.1','1.2.v3.1.2','CT','1.2.840.10008.5.1.4.1.1.2','{"study_uid":"1.2.v3.1","series_uid":"1.2.v3.1.2","sop_uid":"1.2.v3.1.2.4","sop_class_uid":"1.2.840.10008.5.1.4.1.1.2","transfer_syntax_uid":"1.2.840.10008.1.2.1","blob_key":"1.2.v3.1/1.2.v3.1.2/4.dcm","size":1004,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","study_tags":{"0020000D":{"vr":"UI","Value":["1.2.v3.1"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^Jane"}]},"00100020":{"vr":"LO","Value":["PAT-1"]},"00080020":{"vr":"DA","Value":["20240102"]},"00080050":{"vr":"SH","Value":["ACC-1"]}},"series_tags":{"0020000E":{"vr":"UI","Value":["1.2.v3.1.2"]},"00080060":{"vr":"CS","Value":["CT"]}},"instance_tags":{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080018":{"vr":"UI","Value":["1.2.v3.1.2.4"]}},"orthanc_ids":{"patient":"patient-id","study":"study-1.2.v3.1","series":"series-1.2.v3.1.2","instance":"instance-1.2.v3.1.2.4"},"has_file_meta":true,"metadata_key":null,"metadata_size":0,"pixel":{},"bulk":{},"stored_at":"2026-12-07T05:21:10.252Z"}',NULL);
INSERT INTO "instances" VALUES('1.2.v3.2.1.5','1.2.v3.2','1.2.v3.2.1','CT','1.2.840.10008.5.1.4.1.1.2','{"study_uid":"1.2.v3.2","series_uid":"1.2.v3.2.1","sop_uid":"1.2.v3.2.1.5","sop_class_uid":"1.2.840.10008.5.1.4.1.1.2","transfer_syntax_uid":"1.2.840.10008.1.2.4.50","blob_key":"1.2.v3.2/1.2.v3.2.1/5-again.dcm","size":1005,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","study_tags":{"0020000D":{"vr":"UI","Value":["1.2.v3.2"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^Jane"}]},"00100020":{"vr":"LO","Value":["PAT-1"]},"00080020":{"vr":"DA","Value":["20240102"]},"00080050":{"vr":"SH","Value":["ACC-1"]}},"series_tags":{"0020000E":{"vr":"UI","Value":["1.2.v3.2.1"]},"00080060":{"vr":"CS","Value":["CT"]}},"instance_tags":{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080018":{"vr":"UI","Value":["1.2.v3.2.1.5"]}},"orthanc_ids":{"patient":"patient-id","study":"study-1.2.v3.2","series":"series-1.2.v3.2.1","instance":"instance-1.2.v3.2.1.5"},"has_file_meta":true,"metadata_key":null,"metadata_size":0,"pixel":{},"bulk":{},"stored_at":"2026-12-07T05:21:10.253Z"}',NULL);
CREATE TABLE pending_deletes (blob_key TEXT PRIMARY KEY);
INSERT INTO "pending_deletes" VALUES('1.2.v3.1/1.2.v3.1.1/1.dcm');
CREATE TABLE series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    orthanc_id TEXT NOT NULL,
    series_tags TEXT NOT NULL,
    num_instances INTEGER NOT NULL,
    version INTEGER NOT NULL
);
INSERT INTO "series" VALUES('1.2.v3.1.1','1.2.v3.1','CT','series-1.2.v3.1.1','{"0020000E": {"vr": "UI", "Value": ["1.2.v3.1.1"]}, "00080060": {"vr": "CS", "Value": ["CT"]}}',2,1796620870252770);
INSERT INTO "series" VALUES('1.2.v3.1.2','1.2.v3.1','CT','series-1.2.v3.1.2','{"0020000E": {"vr": "UI", "Value": ["1.2.v3.1.2"]}, "00080060": {"vr": "CS", "Value": ["CT"]}}',2,1796620870252948);
INSERT INTO "series" VALUES('1.2.v3.2.1','1.2.v3.2','CT','series-1.2.v3.2.1','{"0020000E": {"vr": "UI", "Value": ["1.2.v3.2.1"]}, "00080060": {"vr": "CS", "Value": ["CT"]}}',1,1796620870252976);
CREATE TABLE studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    study_date TEXT NOT NULL,
    accession_number TEXT NOT NULL,
    orthanc_id TEXT NOT NULL,
    study_tags TEXT NOT NULL,
    num_series INTEGER NOT NULL,
    num_instances INTEGER NOT NULL,
    modalities TEXT NOT NULL,
    sop_classes TEXT NOT NULL,
    version INTEGER NOT NULL
);
INSERT INTO "studies" VALUES('1.2.v3.1','PAT-1','Doe^Jane','20240102','ACC-1','study-1.2.v3.1','{"0020000D": {"vr": "UI", "Value": ["1.2.v3.1"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}, "00100020": {"vr": "LO", "Value": ["PAT-1"]}, "00080020": {"vr": "DA", "Value": ["20240102"]}, "00080050": {"vr": "SH", "Value": ["ACC-1"]}}',2,4,'["CT"]','["1.2.840.10008.5.1.4.1.1.2"]',1796620870253068);
INSERT INTO "studies" VALUES('1.2.v3.2','PAT-1','Doe^Jane','20240102','ACC-1','study-1.2.v3.2','{"0020000D": {"vr": "UI", "Value": ["1.2.v3.2"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}, "00100020": {"vr": "LO", "Value": ["PAT-1"]}, "00080020": {"vr": "DA", "Value": ["20240102"]}, "00080050": {"vr": "SH", "Value": ["ACC-1"]}}',1,1,'["CT"]','["1.2.840.10008.5.1.4.1.1.2"]',1796620870253254);
CREATE TABLE study_keys (
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    study_date TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    term TEXT NOT NULL,
    PRIMARY KEY (name, value, study_date, study_uid, term)
) WITHOUT ROWID;
INSERT INTO "study_keys" VALUES('AccessionNumber','ACC-1','20240102','1.2.v3.1','ACC-1');
INSERT INTO "study_keys" VALUES('ModalitiesInStudy','CT','20240102','1.2.v3.1','CT');
INSERT INTO "study_keys" VALUES('PatientID','PAT-1','20240102','1.2.v3.1','PAT-1');
INSERT INTO "study_keys" VALUES('PatientName','DOE^JANE','20240102','1.2.v3.1','DOE^JANE');
INSERT INTO "study_keys" VALUES('PatientName*1','D','20240102','1.2.v3.1','DOE^JANE');
INSERT INTO "study_keys" VALUES('PatientName*2','DO','20240102','1.2.v3.1','DOE^JANE');
INSERT INTO "study_keys" VALUES('PatientName*3','DOE','20240102','1.2.v3.1','DOE^JANE');
INSERT INTO "study_keys" VALUES('AccessionNumber','ACC-1','20240102','1.2.v3.2','ACC-1');
INSERT INTO "study_keys" VALUES('ModalitiesInStudy','CT','20240102','1.2.v3.2','CT');
INSERT INTO "study_keys" VALUES('PatientID','PAT-1','20240102','1.2.v3.2','PAT-1');
INSERT INTO "study_keys" VALUES('PatientName','DOE^JANE','20240102','1.2.v3.2','DOE^JANE');
INSERT INTO "study_keys" VALUES('PatientName*1','D','20240102','1.2.v3.2','DOE^JANE');
INSERT INTO "study_keys" VALUES('PatientName*2','DO','20240102','1.2.v3.2','DOE^JANE');
INSERT INTO "study_keys" VALUES('PatientName*3','DOE','20240102','1.2.v3.2','DOE^JANE');
CREATE INDEX series_study ON series (study_uid, series_uid);
CREATE INDEX series_modality ON series (modality);
CREATE INDEX instances_series ON instances (study_uid, series_uid, sop_uid);
CREATE INDEX instances_sets ON instances (study_uid, modality, sop_class_uid);
CREATE INDEX studies_listing ON studies (study_date, study_uid);
CREATE INDEX study_keys_study ON study_keys (study_uid);
PRAGMA user_version = 3;
COMMIT;
