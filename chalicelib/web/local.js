// The Local screen: search this server's store (QIDO-RS), thumbnails, and per study: Send (a
// STOW-RS job to the chosen server), Viewer (DicomWeb.ViewerUrlTemplate), Download (a zip of
// its instances, from the WADO-RS multipart answer), Tags.

import { localSearch, localUrl, request, stow } from "./api.js";
import { TAG, describe, text } from "./dicom.js";
import { track } from "./jobs.js";
import { session } from "./session.js";
import { accessToken } from "./signin.js";
import { STUDY_COLUMNS, studyLabel, studySearch } from "./studies.js";
import { el, guarded, saveBlob, tagTable } from "./ui.js";
import { zipFromMultipart } from "./zip.js";

const studyPath = (study) => `/studies/${encodeURIComponent(text(study, TAG.StudyInstanceUID))}`;

/** The study's thumbnail: an <img> loading it, or, when signed in (an <img> cannot send the
 *  token), the image fetched with it as a blob. */
function thumbnail(study) {
  const url = localUrl(`${studyPath(study)}/thumbnail`).href;
  const image = el("img", { class: "thumb", alt: `Thumbnail of ${studyLabel(study)}` });
  const missing = () => image.replaceWith(el("span", { class: "no-preview", text: "no thumbnail" }));
  if (accessToken()) {
    request("Loading a thumbnail", url, { headers: { Accept: "image/jpeg" } })
      .then(async (response) => (image.src = URL.createObjectURL(await response.blob())))
      .catch(missing);
  } else {
    image.loading = "lazy";
    image.addEventListener("error", missing, { once: true });
    image.src = url;
  }
  return image;
}

async function download(study) {
  const uid = text(study, TAG.StudyInstanceUID);
  list.status.textContent = `Downloading ${studyLabel(study)}…`;
  const response = await request(`Downloading the study ${uid}`, localUrl(studyPath(study)), {
    headers: { Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
  });
  const { blob, count } = await zipFromMultipart(response);
  saveBlob(blob, `study-${uid}.zip`);
  list.status.textContent = `Downloaded ${count} instance(s) of ${studyLabel(study)} as study-${uid}.zip.`;
}

function actions(study) {
  const uid = text(study, TAG.StudyInstanceUID);
  const buttons = [
    el("button", {
      type: "button",
      text: "Send",
      onclick: (event) =>
        guarded(event.currentTarget, async () => {
          const server = session.server;
          if (!server) throw new Error("Choose a remote server to send to (none is configured: see the Servers screen).");
          const job = await stow(server, [{ Study: uid }]);
          track(job, `Send of ${studyLabel(study)} to ${server}`);
        }),
    }),
    el("button", { type: "button", text: "Download", onclick: (event) => guarded(event.currentTarget, () => download(study)) }),
    el("button", {
      type: "button",
      text: "Tags",
      onclick: (event) =>
        guarded(event.currentTarget, async () => {
          const row = event.target.closest("tr");
          if (row.nextElementSibling?.classList.contains("tag-row")) {
            row.nextElementSibling.remove(); // a second click hides them
            return;
          }
          const [found] = await localSearch("/studies", { StudyInstanceUID: uid, includefield: "all" });
          const cell = el("td", { colspan: String(columns.length) }, tagTable(`Tags of the study ${uid}`, describe(found || study)));
          row.after(el("tr", { class: "tag-row" }, cell));
        }),
    }),
  ];
  if (session.viewerTemplate) {
    const href = session.viewerTemplate.replaceAll("{uid}", encodeURIComponent(uid));
    buttons.push(el("a", { class: "button", href, target: "_blank", rel: "noopener", text: "Viewer" }));
  }
  return el("div", { class: "row-actions" }, buttons);
}

const { patientName, patientId, date, description, accession, modalities, instances } = STUDY_COLUMNS;
const columns = [
  { label: "Preview", cell: thumbnail },
  ...[patientName, patientId, date, description, accession, modalities, instances],
  { label: "Actions", cell: actions },
];

let list;

export function initLocal() {
  list = studySearch("local", {
    fetch: (query) => localSearch("/studies", query),
    where: () => "in the local store",
    columns: () => columns,
  });
  // A retrieve that ended adds studies: search again so they show.
  document.addEventListener("local-changed", () => list.search());
}

export const searchLocal = () => list.search();
