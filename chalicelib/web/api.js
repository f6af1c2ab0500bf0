// The public API this app uses, and the one fetch wrapper that turns a failure into a message.
//
// Addresses are relative to the page (served at {DicomWeb.Root}/app/client/index.html), so the
// app works under any DicomWeb.Root and behind an API Gateway stage prefix. Client routes in the
// shapes of the Orthanc DICOMweb plugin's client REST API: servers, servers/{name}/get,
// /retrieve, /stow, /delete, and the jobs at the Path they answer. Every call carries the
// access token of signin.js when the user signed in.

import { authorization, signInEnabled } from "./signin.js";

const ROOT = new URL("../../", document.baseURI);

const DICOM_JSON = "application/dicom+json";

/** An HTTP answer outside 2xx, or no answer at all; `message` names the call and the cause. */
export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** The cause an error answer gives: our {Status, Message}, Orthanc's {Message, Details},
 *  DICOMweb's Warning header, or the start of a text body. */
async function causeOf(response) {
  const text = await response.text().catch(() => "");
  let cause = "";
  try {
    const document = JSON.parse(text);
    cause = [document.Message, document.Details, document.ErrorDescription]
      .filter((part) => typeof part === "string" && part)
      .join(": ");
  } catch {
    cause = text.startsWith("<") ? "" : text.trim().slice(0, 300);
  }
  return cause || response.headers.get("Warning") || "";
}

/**
 * fetch(), with a message naming what failed and why when the answer is not 2xx:
 * `what` says the call in the user's words ("Search on server b").
 */
export async function request(what, url, options = {}) {
  let response;
  try {
    response = await fetch(url, { ...options, headers: { ...authorization(), ...options.headers } });
  } catch (error) {
    throw new ApiError(`${what} failed: this server cannot be reached (${error.message}).`);
  }
  if (!response.ok) {
    const cause = await causeOf(response);
    const status = `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
    const hint = response.status === 401 && signInEnabled ? " Sign in first." : "";
    throw new ApiError(`${what} failed: ${status}${cause ? ": " + cause : "."}${hint}`, response.status);
  }
  return response;
}

async function json(what, url, options) {
  const response = await request(what, url, options);
  return response.status === 204 ? null : response.json();
}

function postJson(body) {
  return {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
  };
}

const serverUrl = (name, operation = "") =>
  new URL(`servers/${encodeURIComponent(name)}${operation ? "/" + operation : ""}`, ROOT);

// Remote servers (DicomWeb.Servers, or the ConfigStore with ServersInDatabase).

/** {name: {Url, Username, HasDelete, HttpHeaders, ...}} from `GET servers?expand`. */
export function listServers() {
  return json("Listing the remote servers", new URL("servers?expand", ROOT), {
    headers: { Accept: "application/json" },
  });
}

export function putServer(name, definition) {
  return json(`Saving server ${name}`, serverUrl(name), {
    method: "PUT",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(definition),
  });
}

export function deleteServer(name) {
  return json(`Removing server ${name}`, serverUrl(name), { method: "DELETE" });
}

// Calls on a remote server through this server (`servers/{name}/get`).

/** GET `uri` on the remote with `args` (encoded by our server) and `headers`; the Response. */
export function remoteGet(what, server, uri, args = {}, headers = { Accept: DICOM_JSON }) {
  const body = { Uri: uri, Arguments: args, HttpHeaders: headers };
  return request(`${what} on server ${server}`, serverUrl(server, "get"), postJson(body));
}

/** A QIDO-RS search on the remote: the DICOM JSON datasets ([] for 204 No Content). */
export async function remoteSearch(what, server, uri, args) {
  const response = await remoteGet(what, server, uri, args);
  return response.status === 204 ? [] : (await response.json()) || [];
}

/** Retrieve studies or series into the local store: {ID, Path, url} of the job. */
export function retrieve(server, resources) {
  return startJob(`Retrieving from server ${server}`, serverUrl(server, "retrieve"), {
    Resources: resources,
    Synchronous: false,
  });
}

/** Send local studies to the remote (STOW-RS job): {ID, Path, url}. */
export function stow(server, resources) {
  return startJob(`Sending to server ${server}`, serverUrl(server, "stow"), {
    Resources: resources,
    Synchronous: false,
  });
}

async function startJob(what, url, body) {
  const job = await json(what, url, postJson(body));
  return { ...job, url: new URL(job.Path, url) };
}

/** DELETE a study or series on the remote (servers with HasDelete). */
export function remoteDelete(server, target) {
  return json(`Deleting on server ${server}`, serverUrl(server, "delete"), postJson(target));
}

// Jobs, at the Path their creation answered (Orthanc's job fields).

/** Every job this server knows, with its fields (`GET jobs?expand`); `url` added to each. */
export async function listJobs() {
  const jobs = (await json("Listing the jobs", new URL("jobs?expand", ROOT), { headers: { Accept: "application/json" } })) || [];
  return jobs.map((job) => ({ ...job, url: new URL(`jobs/${encodeURIComponent(job.ID)}`, ROOT) }));
}

export function jobStatus(url) {
  return json("Reading the job's status", url, { headers: { Accept: "application/json" } });
}

export function cancelJob(url) {
  return json("Cancelling the job", new URL(`${url.pathname}/cancel`, url), postJson({}));
}

// This server's own store (QIDO-RS, WADO-RS).

export async function localSearch(uri, args) {
  const url = new URL(uri.replace(/^\//, ""), ROOT);
  for (const [name, value] of Object.entries(args)) url.searchParams.append(name, value);
  const found = await json("Search in the local store", url, { headers: { Accept: DICOM_JSON } });
  return found || [];
}

export const localUrl = (path) => new URL(path.replace(/^\//, ""), ROOT);
