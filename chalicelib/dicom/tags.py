"""Attribute tables for the query levels: keywords, default return attributes, main tags.

Kept as plain data so that QIDO-RS code paths need no pydicom at import time (STYLE.md rule 4);
pydicom's data dictionary is consulted lazily, and only for keywords or tags not listed here.
Tags are 8 upper-case hex digits, as keys of the DICOM JSON model (PS3.18 §F.2, 2025b).
"""

from __future__ import annotations

from typing import Literal

Level = Literal["study", "series", "instance"]

KEYWORDS: dict[str, tuple[str, str]] = {
    # Patient and Study
    "SpecificCharacterSet": ("00080005", "CS"),
    "StudyDate": ("00080020", "DA"),
    "StudyTime": ("00080030", "TM"),
    "AccessionNumber": ("00080050", "SH"),
    "InstanceAvailability": ("00080056", "CS"),
    "ModalitiesInStudy": ("00080061", "CS"),
    "SOPClassesInStudy": ("00080062", "UI"),
    "InstitutionName": ("00080080", "LO"),
    "ReferringPhysicianName": ("00080090", "PN"),
    "TimezoneOffsetFromUTC": ("00080201", "SH"),
    "StudyDescription": ("00081030", "LO"),
    "NameOfPhysiciansReadingStudy": ("00081060", "PN"),
    "RetrieveURL": ("00081190", "UR"),
    "PatientName": ("00100010", "PN"),
    "PatientID": ("00100020", "LO"),
    "IssuerOfPatientID": ("00100021", "LO"),
    "PatientBirthDate": ("00100030", "DA"),
    "PatientBirthTime": ("00100032", "TM"),
    "PatientSex": ("00100040", "CS"),
    "OtherPatientIDs": ("00101000", "LO"),
    "PatientAge": ("00101010", "AS"),
    "PatientSize": ("00101020", "DS"),
    "PatientWeight": ("00101030", "DS"),
    "EthnicGroup": ("00102160", "SH"),
    "PatientComments": ("00104000", "LT"),
    "StudyInstanceUID": ("0020000D", "UI"),
    "StudyID": ("00200010", "SH"),
    "NumberOfStudyRelatedSeries": ("00201206", "IS"),
    "NumberOfStudyRelatedInstances": ("00201208", "IS"),
    "RequestingPhysician": ("00321032", "PN"),
    "RequestedProcedureDescription": ("00321060", "LO"),
    # Series
    "SeriesDate": ("00080021", "DA"),
    "SeriesTime": ("00080031", "TM"),
    "Modality": ("00080060", "CS"),
    "Manufacturer": ("00080070", "LO"),
    "StationName": ("00081010", "SH"),
    "SeriesDescription": ("0008103E", "LO"),
    "PerformingPhysicianName": ("00081050", "PN"),
    "OperatorsName": ("00081070", "PN"),
    "ManufacturerModelName": ("00081090", "LO"),
    "ContrastBolusAgent": ("00180010", "LO"),
    "BodyPartExamined": ("00180015", "CS"),
    "SequenceName": ("00180024", "SH"),
    "CardiacNumberOfImages": ("00181090", "IS"),
    "ProtocolName": ("00181030", "LO"),
    "AcquisitionDeviceProcessingDescription": ("00181400", "LO"),
    "SeriesInstanceUID": ("0020000E", "UI"),
    "SeriesNumber": ("00200011", "IS"),
    "FrameOfReferenceUID": ("00200052", "UI"),
    "Laterality": ("00200060", "CS"),
    "NumberOfTemporalPositions": ("00200105", "IS"),
    "ImagesInAcquisition": ("00201002", "IS"),
    "NumberOfSeriesRelatedInstances": ("00201209", "IS"),
    "ScheduledProcedureStepID": ("00400009", "SH"),
    "PerformedProcedureStepStartDate": ("00400244", "DA"),
    "PerformedProcedureStepStartTime": ("00400245", "TM"),
    "PerformedProcedureStepDescription": ("00400254", "LO"),
    "RequestAttributesSequence": ("00400275", "SQ"),
    "RequestedProcedureID": ("00401001", "SH"),
    "NumberOfSlices": ("00540081", "US"),
    "NumberOfTimeSlices": ("00540101", "US"),
    "SeriesType": ("00541000", "CS"),
    # Instance
    "ImageType": ("00080008", "CS"),
    "InstanceCreationDate": ("00080012", "DA"),
    "InstanceCreationTime": ("00080013", "TM"),
    "SOPClassUID": ("00080016", "UI"),
    "SOPInstanceUID": ("00080018", "UI"),
    "AcquisitionDate": ("00080022", "DA"),
    "ContentDate": ("00080023", "DA"),
    "AcquisitionDateTime": ("0008002A", "DT"),
    "AcquisitionTime": ("00080032", "TM"),
    "ContentTime": ("00080033", "TM"),
    "AvailableTransferSyntaxUID": ("00083002", "UI"),
    "SliceThickness": ("00180050", "DS"),
    "AcquisitionNumber": ("00200012", "IS"),
    "InstanceNumber": ("00200013", "IS"),
    "ImagePositionPatient": ("00200032", "DS"),
    "ImageOrientationPatient": ("00200037", "DS"),
    "TemporalPositionIdentifier": ("00200100", "IS"),
    "SliceLocation": ("00201041", "DS"),
    "ImageComments": ("00204000", "LT"),
    "SamplesPerPixel": ("00280002", "US"),
    "PhotometricInterpretation": ("00280004", "CS"),
    "NumberOfFrames": ("00280008", "IS"),
    "Rows": ("00280010", "US"),
    "Columns": ("00280011", "US"),
    "PixelSpacing": ("00280030", "DS"),
    "BitsAllocated": ("00280100", "US"),
    "BitsStored": ("00280101", "US"),
    "HighBit": ("00280102", "US"),
    "PixelRepresentation": ("00280103", "US"),
    "WindowCenter": ("00281050", "DS"),
    "WindowWidth": ("00281051", "DS"),
    "RescaleIntercept": ("00281052", "DS"),
    "RescaleSlope": ("00281053", "DS"),
    "ImageIndex": ("00541330", "US"),
    "ContentLabel": ("00700080", "CS"),
    "ContentDescription": ("00700081", "LO"),
    "ContentCreatorName": ("00700084", "PN"),
    # Code Sequence Macro (PS3.3 Table 8.8-1), for sequence matching on coded items
    "CodeValue": ("00080100", "SH"),
    "CodingSchemeDesignator": ("00080102", "SH"),
    "CodeMeaning": ("00080104", "LO"),
    "ConceptNameCodeSequence": ("0040A043", "SQ"),
}

_BY_TAG: dict[str, tuple[str, str]] = {tag: (kw, vr) for kw, (tag, vr) in KEYWORDS.items()}


def _tags(*keywords: str) -> tuple[str, ...]:
    return tuple(KEYWORDS[keyword][0] for keyword in keywords)


STUDY_DEFAULT_TAGS = _tags(
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
"""Study Resource Search Response Payload, PS3.18 Table 10.6.3-3 (2025b)."""

SERIES_DEFAULT_TAGS = _tags(
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "RetrieveURL",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)
"""Series Resources Search Response Payload, PS3.18 Table 10.6.3-4 (2025b); the table lists
Scheduled Procedure Step ID and Requested Procedure ID inside Request Attributes Sequence."""

INSTANCE_DEFAULT_TAGS = _tags(
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)
"""Instance Resources Search Response Payload, PS3.18 Table 10.6.3-5 (2025b)."""

STUDY_LEVEL_TAGS = (
    *STUDY_DEFAULT_TAGS,
    *_tags(
        "SpecificCharacterSet",
        "SOPClassesInStudy",
        "InstitutionName",
        "StudyDescription",
        "NameOfPhysiciansReadingStudy",
        "IssuerOfPatientID",
        "PatientBirthTime",
        "OtherPatientIDs",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "EthnicGroup",
        "PatientComments",
        "RequestingPhysician",
        "RequestedProcedureDescription",
    ),
)
"""Tags kept on a study record: the defaults plus the Patient and Study main tags (Orthanc's
main DICOM tags, PS3.4 §C.6.2.1.2 Study Level keys) and what viewers ask in includefield."""

SERIES_LEVEL_TAGS = (
    *SERIES_DEFAULT_TAGS,
    *_tags(
        "SpecificCharacterSet",
        "SeriesDate",
        "SeriesTime",
        "Manufacturer",
        "StationName",
        "PerformingPhysicianName",
        "OperatorsName",
        "ManufacturerModelName",
        "ContrastBolusAgent",
        "BodyPartExamined",
        "SequenceName",
        "CardiacNumberOfImages",
        "ProtocolName",
        "AcquisitionDeviceProcessingDescription",
        "FrameOfReferenceUID",
        "Laterality",
        "NumberOfTemporalPositions",
        "ImagesInAcquisition",
        "PerformedProcedureStepDescription",
        "NumberOfSlices",
        "NumberOfTimeSlices",
        "SeriesType",
    ),
)
"""Tags kept on a series record: the defaults plus the Series main tags (PS3.4 §C.6.1.1.4)."""

INSTANCE_LEVEL_TAGS = (
    *INSTANCE_DEFAULT_TAGS,
    *_tags(
        "SpecificCharacterSet",
        "ImageType",
        "InstanceCreationDate",
        "InstanceCreationTime",
        "AcquisitionDate",
        "ContentDate",
        "AcquisitionDateTime",
        "AcquisitionTime",
        "ContentTime",
        "AvailableTransferSyntaxUID",
        "SliceThickness",
        "AcquisitionNumber",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "TemporalPositionIdentifier",
        "SliceLocation",
        "ImageComments",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PixelSpacing",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "WindowCenter",
        "WindowWidth",
        "RescaleIntercept",
        "RescaleSlope",
        "ImageIndex",
        "ContentLabel",
        "ContentDescription",
        "ContentCreatorName",
        "ConceptNameCodeSequence",
    ),
)
"""Tags kept on an instance record: the defaults plus the Instance main tags (PS3.4 §C.6.1.1.5)."""

DEFAULT_TAGS: dict[Level, tuple[str, ...]] = {
    "study": STUDY_DEFAULT_TAGS,
    "series": SERIES_DEFAULT_TAGS,
    "instance": INSTANCE_DEFAULT_TAGS,
}

LEVEL_TAGS: dict[Level, tuple[str, ...]] = {
    "study": STUDY_LEVEL_TAGS,
    "series": SERIES_LEVEL_TAGS,
    "instance": INSTANCE_LEVEL_TAGS,
}


def lookup_keyword(keyword: str) -> tuple[str, str] | None:
    """(tag, VR) of a PS3.6 keyword, or None if the data dictionary does not know it."""
    if keyword in KEYWORDS:
        return KEYWORDS[keyword]
    from pydicom.datadict import dictionary_VR, tag_for_keyword  # lazy: cold-start cost

    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    return f"{tag:08X}", dictionary_VR(tag).split(" or ")[0]  # "US or SS": either will do


def lookup_tag(tag: str) -> tuple[str, str] | None:
    """(keyword, VR) of a public tag given as 8 hex digits, or None if unknown or private."""
    tag = tag.upper()
    if tag in _BY_TAG:
        return _BY_TAG[tag]
    from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VR

    value = int(tag, 16)
    if not dictionary_has_tag(value):
        return None
    return dictionary_keyword(value), dictionary_VR(value).split(" or ")[0]
