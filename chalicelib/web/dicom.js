// Reading the DICOM JSON model (PS3.18 §F.2, 2025b) and writing QIDO-RS query arguments.

export const TAG = {
  StudyDate: "00080020",
  AccessionNumber: "00080050",
  Modality: "00080060",
  ModalitiesInStudy: "00080061",
  StudyDescription: "00081030",
  SeriesDescription: "0008103E",
  PatientName: "00100010",
  PatientID: "00100020",
  PatientBirthDate: "00100030",
  StudyInstanceUID: "0020000D",
  SeriesInstanceUID: "0020000E",
  StudyID: "00200010",
  SeriesNumber: "00200011",
  InstanceNumber: "00200013",
  SOPInstanceUID: "00080018",
  NumberOfStudyRelatedSeries: "00201206",
  NumberOfStudyRelatedInstances: "00201208",
  NumberOfSeriesRelatedInstances: "00201209",
};

/** Keyword of the tags this app names; others are shown by number. */
const KEYWORDS = Object.fromEntries(Object.entries(TAG).map(([keyword, tag]) => [tag, keyword]));
Object.assign(KEYWORDS, {
  "00080005": "SpecificCharacterSet",
  "00080016": "SOPClassUID",
  "00080030": "StudyTime",
  "00080056": "InstanceAvailability",
  "00080062": "SOPClassesInStudy",
  "00080090": "ReferringPhysicianName",
  "00081190": "RetrieveURL",
  "00100040": "PatientSex",
  "00180015": "BodyPartExamined",
  "00080021": "SeriesDate",
  "00080031": "SeriesTime",
  "00080070": "Manufacturer",
  "00080080": "InstitutionName",
  "00081010": "StationName",
  "00101010": "PatientAge",
  "00101020": "PatientSize",
  "00101030": "PatientWeight",
  "00104000": "PatientComments",
  "00181030": "ProtocolName",
  "00200052": "FrameOfReferenceUID",
  "00280002": "SamplesPerPixel",
  "00280004": "PhotometricInterpretation",
  "00280008": "NumberOfFrames",
  "00280010": "Rows",
  "00280011": "Columns",
});

export const keyword = (tag) => KEYWORDS[tag.toUpperCase()] || "";

/** One value as text: PN as its Alphabetic group, several values joined by a backslash. */
export function text(dataset, tag) {
  const element = dataset?.[tag] ?? dataset?.[tag.toLowerCase()];
  const values = element?.Value;
  if (!Array.isArray(values)) return "";
  return values
    .map((value) => {
      if (value === null || value === undefined) return "";
      if (typeof value === "object") return value.Alphabetic ?? JSON.stringify(value);
      return String(value);
    })
    .join("\\");
}

export const number = (dataset, tag) => Number.parseInt(text(dataset, tag), 10) || 0;

/** A DA value (YYYYMMDD) as YYYY-MM-DD; anything else as it is. */
export function formatDate(value) {
  return /^\d{8}$/.test(value) ? `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6)}` : value;
}

/** Every attribute of a dataset as rows for a table: tag, keyword, VR, value. */
export function describe(dataset) {
  return Object.keys(dataset)
    .sort()
    .map((tag) => {
      const element = dataset[tag];
      let value = text(dataset, tag);
      if (element.vr === "SQ") value = `${(element.Value || []).length} item(s)`;
      else if (element.BulkDataURI) value = `(bulk data) ${element.BulkDataURI}`;
      else if (element.InlineBinary) value = "(binary)";
      const label = `(${tag.slice(0, 4)},${tag.slice(4)})`;
      return [label, keyword(tag), element.vr || "", value];
    });
}
