// The Study panel: a remote study's series (description, modality, instances), a preview of
// each series' middle instance (`/rendered` through `servers/{name}/get`), and their tags.

import { remoteDelete, remoteGet, remoteSearch, retrieve } from "./api.js";
import { TAG, describe, formatDate, number, text } from "./dicom.js";
import { track } from "./jobs.js";
import { session } from "./session.js";
import { el, guarded, showError, tagTable } from "./ui.js";

const panel = document.getElementById("study");
const title = document.getElementById("study-title");
const summary = document.getElementById("study-summary");
const grid = document.getElementById("study-series");
const studyTags = document.getElementById("study-tags");

const studyPath = (study) => `/studies/${text(study, TAG.StudyInstanceUID)}`;

/** Show the tags of a remote study (QIDO-RS with includefield=all) in the panel. */
export async function showStudyTags(server, study) {
  const uid = text(study, TAG.StudyInstanceUID);
  const [found] = await remoteSearch("Reading the study's tags", server, "/studies", { StudyInstanceUID: uid, includefield: "all" });
  showPanel(study);
  studyTags.replaceChildren(tagTable(`Tags of the study ${uid}`, describe(found || study)));
}

/** Show the panel for `study`; another study's series and tags are cleared. */
function showPanel(study) {
  if (panel.dataset.study !== text(study, TAG.StudyInstanceUID)) {
    panel.dataset.study = text(study, TAG.StudyInstanceUID);
    grid.replaceChildren();
    studyTags.replaceChildren();
  }
  panel.hidden = false;
  title.textContent = `Study: ${text(study, TAG.PatientName) || text(study, TAG.PatientID)} ${formatDate(text(study, TAG.StudyDate))}`.trim();
  summary.textContent = [text(study, TAG.StudyDescription), `Study Instance UID ${text(study, TAG.StudyInstanceUID)}`].filter(Boolean).join(" · ");
  title.focus();
}

/** Open a remote study: its series, each with a preview and its own actions. */
export async function openStudy(server, study) {
  showPanel(study);
  grid.replaceChildren(el("p", { role: "status", text: "Loading the series…" }));
  let series;
  try {
    series = await remoteSearch("Listing the series", server, `${studyPath(study)}/series`, { includefield: TAG.SeriesDescription });
  } catch (error) {
    grid.replaceChildren();
    showError(error);
    return;
  }
  if (!series.length) {
    grid.replaceChildren(el("p", { role: "status", text: "This study has no series on the remote server." }));
    return;
  }
  series.sort((a, b) => number(a, TAG.SeriesNumber) - number(b, TAG.SeriesNumber));
  grid.replaceChildren(...series.map((item) => seriesCard(server, study, item)));
}

function seriesCard(server, study, series) {
  const uid = text(series, TAG.SeriesInstanceUID);
  const name = text(series, TAG.SeriesDescription) || `Series ${text(series, TAG.SeriesNumber) || uid}`;
  const count = number(series, TAG.NumberOfSeriesRelatedInstances);
  const preview = el("div", { class: "preview" }, el("span", { text: "Loading preview…" }));
  const tags = el("div", { class: "series-tags" });
  const buttons = [
    el("button", {
      type: "button",
      text: "Tags",
      "aria-label": `Tags of ${name}`,
      onclick: (event) =>
        guarded(event.currentTarget, async () => {
          const [found] = await remoteSearch("Reading the series' tags", server, `${studyPath(study)}/series`, { SeriesInstanceUID: uid, includefield: "all" });
          tags.replaceChildren(tagTable(`Tags of ${name}`, describe(found || series)));
        }),
    }),
    el("button", {
      type: "button",
      text: "Retrieve",
      "aria-label": `Retrieve ${name}`,
      onclick: (event) =>
        guarded(event.currentTarget, async () => {
          const job = await retrieve(server, [{ Study: text(study, TAG.StudyInstanceUID), Series: uid }]);
          track(job, `Retrieve of ${name} from ${server}`, () => document.dispatchEvent(new Event("local-changed")));
        }),
    }),
  ];
  if (session.servers[server]?.HasDelete) {
    buttons.push(
      el("button", {
        type: "button",
        class: "danger",
        text: "Delete",
        "aria-label": `Delete ${name}`,
        onclick: (event) => {
          if (!window.confirm(`Delete the series ${name} on the server ${server}? This cannot be undone.`)) return;
          guarded(event.currentTarget, async () => {
            await remoteDelete(server, { Level: "Series", StudyInstanceUID: text(study, TAG.StudyInstanceUID), SeriesInstanceUID: uid });
            card.remove();
          });
        },
      }),
    );
  }
  const card = el("article", { class: "series", "aria-label": name },
    preview,
    el("h3", { text: name }),
    el("p", { text: `${text(series, TAG.Modality) || "?"} · ${count} instance(s)` }),
    el("div", { class: "row-actions" }, buttons),
    tags);
  loadPreview(server, study, series, name, preview);
  return card;
}

/** The middle instance (by InstanceNumber) of a series, rendered as JPEG by the remote, at its
 *  own size (no `viewport`: Orthanc 1.10 refuses the comma of `vw,vh` as it arrives). */
async function loadPreview(server, study, series, name, box) {
  const seriesPath = `${studyPath(study)}/series/${text(series, TAG.SeriesInstanceUID)}`;
  try {
    const limit = Math.max(number(series, TAG.NumberOfSeriesRelatedInstances), 1);
    const instances = await remoteSearch("Listing the instances", server, `${seriesPath}/instances`, { limit: String(limit) });
    if (!instances.length) throw new Error("the series has no instance");
    instances.sort((a, b) => number(a, TAG.InstanceNumber) - number(b, TAG.InstanceNumber));
    const middle = instances[Math.floor((instances.length - 1) / 2)];
    const response = await remoteGet("Rendering a preview", server, `${seriesPath}/instances/${text(middle, TAG.SOPInstanceUID)}/rendered`, {}, { Accept: "image/jpeg" });
    const image = el("img", { alt: `Preview of ${name}, instance ${text(middle, TAG.InstanceNumber) || ""}`.trim() });
    image.src = URL.createObjectURL(await response.blob());
    box.replaceChildren(image);
  } catch (error) {
    box.replaceChildren(el("span", { class: "no-preview", text: `No preview: ${error.message}` }));
  }
}
