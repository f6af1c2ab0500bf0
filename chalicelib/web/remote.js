// The Remote screen: search the chosen server's studies (QIDO-RS through `servers/{name}/get`),
// page with "More results", sort, and per study: Series (open it), Tags, Retrieve, Delete.

import { remoteDelete, remoteSearch, retrieve } from "./api.js";
import { TAG, text } from "./dicom.js";
import { track } from "./jobs.js";
import { session } from "./session.js";
import { STUDY_COLUMNS, studyLabel, studySearch } from "./studies.js";
import { openStudy, showStudyTags } from "./study.js";
import { el, guarded } from "./ui.js";

let list;

function studyColumns(server) {
  return [...Object.values(STUDY_COLUMNS), { label: "Actions", cell: (s) => actions(server, s) }];
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
            list.remove(study);
            list.status.textContent = `Deleted ${studyLabel(study)} on ${server}.`;
          });
        },
      }),
    );
  }
  return el("div", { class: "row-actions" }, buttons);
}

export function initRemote() {
  list = studySearch("remote", {
    fetch: (query) => remoteSearch("Search", session.server, "/studies", query),
    where: () => {
      if (!session.server) throw new Error("Choose a remote server first (none is configured: see the Servers screen).");
      return `on ${session.server}`;
    },
    columns: () => studyColumns(session.server),
  });
  document.addEventListener("server-changed", () => {
    list.clear();
    const panel = document.getElementById("study");
    panel.hidden = true;
    delete panel.dataset.study; // the same UID on another server is another study
  });
}
