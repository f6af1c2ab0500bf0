// Study lists, shared by the Local and Remote screens: the search form (one <template> in
// index.html, cloned into each screen's form), its QIDO-RS arguments, paging with "More
// results", the status line, and the columns both tables show.

import { TAG, formatDate, number, text } from "./dicom.js";
import { clearMessage, guarded, renderTable, showError } from "./ui.js";

/** A short name for a study in labels and messages. */
export const studyLabel = (study) =>
  [text(study, TAG.PatientName) || text(study, TAG.PatientID), text(study, TAG.StudyDescription), formatDate(text(study, TAG.StudyDate))]
    .filter(Boolean)
    .join(", ") || text(study, TAG.StudyInstanceUID);

const textColumn = (label, tag, show = (value) => value) => ({
  label,
  cell: (s) => show(text(s, tag)),
  sortKey: (s) => text(s, tag),
});
const countColumn = (label, tag) => ({ label, cell: (s) => String(number(s, tag)), sortKey: (s) => number(s, tag) });

/** The columns of a study row, by name: each screen picks its own. */
export const STUDY_COLUMNS = {
  patientName: textColumn("Patient name", TAG.PatientName),
  patientId: textColumn("Patient ID", TAG.PatientID),
  date: textColumn("Study date", TAG.StudyDate, formatDate),
  description: textColumn("Description", TAG.StudyDescription),
  accession: textColumn("Accession", TAG.AccessionNumber),
  modalities: textColumn("Modalities", TAG.ModalitiesInStudy),
  series: countColumn("Series", TAG.NumberOfStudyRelatedSeries),
  instances: countColumn("Instances", TAG.NumberOfStudyRelatedInstances),
};

/**
 * The QIDO-RS arguments of a search form: one key per non-empty field, StudyDate as a range
 * (PS3.4 §C.2.2.2.5), `fuzzymatching`, and `limit`/`offset` for paging (PS3.18 §8.3.4.4).
 * Wildcards (`*`, `?`) pass as typed; our server URL-encodes them for the remote.
 */
function studyQuery(form, offset, limit) {
  const data = new FormData(form);
  const args = {};
  for (const name of ["PatientName", "PatientID", "AccessionNumber", "StudyID", "ModalitiesInStudy"]) {
    const value = String(data.get(name) || "").trim();
    if (value) args[name] = value;
  }
  const from = String(data.get("StudyDateFrom") || "").replaceAll("-", "");
  const to = String(data.get("StudyDateTo") || "").replaceAll("-", "");
  if (from || to) args.StudyDate = from === to ? from : `${from}-${to}`;
  if (data.get("fuzzymatching")) args.fuzzymatching = "true";
  args.includefield = TAG.StudyDescription;
  args.offset = String(offset);
  // One more than shown: whether there are more results, without relying on a Warning header.
  args.limit = String(limit + 1);
  return args;
}

/**
 * The study search of the screen whose elements are `{prefix}-search` (an empty form, filled
 * from the template), `-results`, `-status` and `-more`. `fetch(query)` runs the search;
 * `where()` names the place searched ("in the local store"), or throws when there is none;
 * `columns()` gives the table's columns. Returns what the screen needs to act on its rows.
 */
export function studySearch(prefix, { fetch, where, columns }) {
  const form = document.getElementById(`${prefix}-search`);
  const table = document.getElementById(`${prefix}-results`);
  const status = document.getElementById(`${prefix}-status`);
  const more = document.getElementById(`${prefix}-more`);
  form.append(document.getElementById("study-search").content.cloneNode(true));
  let rows = [];
  let offset = 0;

  const show = () => {
    if (rows.length) renderTable(table, columns(), rows);
    else table.hidden = true;
  };
  const clear = () => {
    rows = [];
    table.hidden = true;
    more.hidden = true;
    status.textContent = "";
  };

  async function search(append) {
    const place = where();
    const limit = Number(new FormData(form).get("limit"));
    offset = append ? offset + limit : 0;
    status.textContent = `Searching ${place}…`;
    try {
      const found = await fetch(studyQuery(form, offset, limit));
      clearMessage();
      rows = append ? rows.concat(found.slice(0, limit)) : found.slice(0, limit);
      more.hidden = found.length <= limit;
      status.textContent = rows.length
        ? `${rows.length} ${rows.length === 1 ? "study" : "studies"} ${place}${more.hidden ? "" : " (more results available)"}.`
        : `No study ${place} matches this search.`;
      show();
    } catch (error) {
      if (append) status.textContent = "";
      else clear();
      showError(error);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(form.querySelector("button[type=submit]"), () => search(false));
  });
  more.addEventListener("click", () => guarded(more, () => search(true)));
  return {
    search: () => search(false),
    clear,
    status,
    /** Take a study off the list (deleted). */
    remove(study) {
      rows = rows.filter((row) => row !== study);
      show();
    },
  };
}
