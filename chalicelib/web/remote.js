// The Remote screen: search the chosen server's studies (QIDO-RS through `servers/{name}/get`),
// page with "More results", sort, and per study: Series (open it), Tags, Retrieve, Delete.

import { remoteDelete, remoteSearch, retrieve } from "./api.js";
import { TAG, formatDate, number, studyQuery, text } from "./dicom.js";
import { track } from "./jobs.js";
import { session } from "./session.js";
import { openStudy, showStudyTags } from "./study.js";
import { clearMessage, el, guarded, renderTable, showError } from "./ui.js";

const form = document.getElementById("remote-search");
const table = document.getElementById("remote-results");
const status = document.getElementById("remote-status");
const more = document.getElementById("remote-more");

let rows = [];
let offset = 0;

/** A short name for a study in labels and messages. */
export const studyLabel = (study) =>
  [text(study, TAG.PatientName) || text(study, TAG.PatientID), text(study, TAG.StudyDescription), formatDate(text(study, TAG.StudyDate))]
    .filter(Boolean)
    .join(", ") || text(study, TAG.StudyInstanceUID);

function studyColumns(server) {
  return [
    { label: "Patient name", cell: (s) => text(s, TAG.PatientName), sortKey: (s) => text(s, TAG.PatientName) },
    { label: "Patient ID", cell: (s) => text(s, TAG.PatientID), sortKey: (s) => text(s, TAG.PatientID) },
    { label: "Study date", cell: (s) => formatDate(text(s, TAG.StudyDate)), sortKey: (s) => text(s, TAG.StudyDate) },
    { label: "Description", cell: (s) => text(s, TAG.StudyDescription), sortKey: (s) => text(s, TAG.StudyDescription) },
    { label: "Accession", cell: (s) => text(s, TAG.AccessionNumber), sortKey: (s) => text(s, TAG.AccessionNumber) },
    { label: "Modalities", cell: (s) => text(s, TAG.ModalitiesInStudy), sortKey: (s) => text(s, TAG.ModalitiesInStudy) },
    { label: "Series", cell: (s) => String(number(s, TAG.NumberOfStudyRelatedSeries)), sortKey: (s) => number(s, TAG.NumberOfStudyRelatedSeries) },
    { label: "Instances", cell: (s) => String(number(s, TAG.NumberOfStudyRelatedInstances)), sortKey: (s) => number(s, TAG.NumberOfStudyRelatedInstances) },
    { label: "Actions", cell: (s) => actions(server, s) },
  ];
}

function actions(server, study) {
  const uid = text(study, TAG.StudyInstanceUID);
  const buttons = [
    el("button", { type: "button", text: "Series", onclick: () => openStudy(server, study) }),
    el("button", { type: "button", text: "Tags", onclick: (event) => guarded(event.currentTarget, () => showStudyTags(server, study)) }),
    el("button", {
      type: "button",
      text: "Retrieve",
      onclick: (event) =>
        guarded(event.currentTarget, async () => {
          const job = await retrieve(server, [{ Study: uid }]);
          track(job, `Retrieve of ${studyLabel(study)} from ${server}`, () => document.dispatchEvent(new Event("local-changed")));
        }),
    }),
  ];
  if (session.servers[server]?.HasDelete) {
    buttons.push(
      el("button", {
        type: "button",
        class: "danger",
        text: "Delete",
        onclick: (event) => {
          if (!window.confirm(`Delete the study ${studyLabel(study)} on the server ${server}? This cannot be undone.`)) return;
          guarded(event.currentTarget, async () => {
            await remoteDelete(server, { Level: "Study", StudyInstanceUID: uid });
            rows = rows.filter((row) => row !== study);
            show(server);
            status.textContent = `Deleted ${studyLabel(study)} on ${server}.`;
          });
        },
      }),
    );
  }
  return el("div", { class: "row-actions" }, buttons);
}

function show(server) {
  renderTable(table, studyColumns(server), rows);
}

async function search(append) {
  const server = session.server;
  if (!server) {
    showError(new Error("Choose a remote server first (none is configured: see the Servers screen)."));
    return;
  }
  const limit = Number(new FormData(form).get("limit"));
  offset = append ? offset + limit : 0;
  status.textContent = `Searching ${server}…`;
  try {
    const found = await remoteSearch("Search", server, "/studies", studyQuery(form, offset, limit));
    clearMessage();
    rows = append ? rows.concat(found.slice(0, limit)) : found.slice(0, limit);
    more.hidden = found.length <= limit;
    status.textContent = rows.length
      ? `${rows.length} ${rows.length === 1 ? "study" : "studies"} on ${server}${more.hidden ? "" : " (more results available)"}.`
      : `No study on ${server} matches this search.`;
    if (rows.length) show(server);
    else table.hidden = true;
  } catch (error) {
    status.textContent = "";
    if (!append) {
      rows = [];
      table.hidden = true;
      more.hidden = true;
    }
    showError(error);
  }
}

export function initRemote() {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(form.querySelector("button[type=submit]"), () => search(false));
  });
  more.addEventListener("click", () => guarded(more, () => search(true)));
  document.addEventListener("server-changed", () => {
    rows = [];
    table.hidden = true;
    more.hidden = true;
    status.textContent = "";
    const panel = document.getElementById("study");
    panel.hidden = true;
    delete panel.dataset.study; // the same UID on another server is another study
  });
}
