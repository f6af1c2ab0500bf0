// The Servers screen and the "Server" select: the remote servers from `servers?expand`; add,
// edit (PUT servers/{name}) and remove (DELETE) when DicomWeb.ServersInDatabase is on.
// Passwords and header values are write-only: the API never returns them.

import { deleteServer, listServers, putServer } from "./api.js";
import { session } from "./session.js";
import { el, guarded, renderTable, showError } from "./ui.js";

const select = document.getElementById("server");
const table = document.getElementById("servers-list");
const form = document.getElementById("server-form");
const formTitle = document.getElementById("server-form-title");
const noServer = document.getElementById("no-server");

/** Header names of a definition: `HttpHeaders` is a list of names or an object. */
const headerNames = (definition) => {
  const headers = definition.HttpHeaders || [];
  return Array.isArray(headers) ? headers : Object.keys(headers);
};

function edit(name, definition) {
  form.reset();
  form.elements.name.value = name;
  form.elements.name.readOnly = true;
  form.elements.Url.value = definition.Url || "";
  form.elements.Username.value = definition.Username || "";
  form.elements.HasDelete.checked = Boolean(definition.HasDelete);
  form.elements.Timeout.value = definition.Timeout || "";
  form.elements.HttpHeaders.value = headerNames(definition).map((header) => `${header}: `).join("\n");
  formTitle.textContent = `Edit the server ${name}`;
  form.elements.Url.focus();
}

function newServer() {
  form.reset();
  form.elements.name.readOnly = false;
  formTitle.textContent = "Add a server";
}

function remove(name) {
  if (!window.confirm(`Remove the server ${name} from the list? Its data stays where it is.`)) return;
  return guarded(null, async () => {
    await deleteServer(name);
    await loadServers();
  });
}

function render() {
  const names = Object.keys(session.servers).sort();
  const columns = [
    { label: "Name", cell: (name) => name, sortKey: (name) => name },
    { label: "URL", cell: (name) => session.servers[name].Url || "", sortKey: (name) => session.servers[name].Url || "" },
    { label: "Username", cell: (name) => session.servers[name].Username || "" },
    { label: "Has delete", cell: (name) => (session.servers[name].HasDelete ? "yes" : "no") },
    { label: "HTTP headers", cell: (name) => headerNames(session.servers[name]).join(", ") },
  ];
  if (session.serversEditable) {
    columns.push({
      label: "Actions",
      cell: (name) =>
        el("div", { class: "row-actions" },
          el("button", { type: "button", text: "Edit", "aria-label": `Edit server ${name}`, onclick: () => edit(name, session.servers[name]) }),
          el("button", { type: "button", class: "danger", text: "Remove", "aria-label": `Remove server ${name}`, onclick: () => remove(name) })),
    });
  }
  if (names.length) renderTable(table, columns, names);
  else table.replaceChildren(el("caption", { text: "No remote server is configured." }));

  const chosen = names.includes(session.server) ? session.server : names[0] || "";
  select.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
  select.disabled = !names.length;
  if (chosen !== session.server) {
    session.server = chosen;
    document.dispatchEvent(new Event("server-changed"));
  }
  select.value = chosen;
}

/** Read the servers again and refresh the select and the Servers screen. */
export async function loadServers() {
  let listed = true;
  try {
    session.servers = (await listServers()) || {};
  } catch (error) {
    listed = false;
    session.servers = {};
    showError(error);
  }
  render();
  noServer.hidden = !listed || Boolean(Object.keys(session.servers).length);
}

/** The PUT body of the form, in the configuration's shape (DicomWeb.Servers). */
function definitionOf() {
  const data = new FormData(form);
  const definition = { Url: String(data.get("Url")).trim(), HasDelete: data.get("HasDelete") !== null };
  for (const name of ["Username", "Password"]) {
    const value = String(data.get(name) || "");
    if (value) definition[name] = value;
  }
  const timeout = Number(data.get("Timeout"));
  if (timeout > 0) definition.Timeout = timeout;
  const headers = {};
  for (const line of String(data.get("HttpHeaders") || "").split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0 && line.slice(colon + 1).trim()) headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  if (Object.keys(headers).length) definition.HttpHeaders = headers;
  return definition;
}

/** The secrets an edit would drop: PUT replaces the definition, and the API never returns a
 *  password or a header value, so the form starts without them. */
function secretsLost(previous, definition) {
  if (!previous) return [];
  const lost = [];
  if ("Password" in previous && !definition.Password && definition.Username) lost.push("password");
  const kept = Object.keys(definition.HttpHeaders || {});
  const dropped = headerNames(previous).filter((header) => !kept.includes(header));
  if (dropped.length) lost.push(`header ${dropped.join(", ")}`);
  return lost;
}

export function initServers() {
  document.getElementById("servers-fixed").hidden = session.serversEditable;
  form.hidden = !session.serversEditable;
  select.addEventListener("change", () => {
    session.server = select.value;
    document.dispatchEvent(new Event("server-changed"));
  });
  document.getElementById("server-form-reset").addEventListener("click", newServer);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    const definition = definitionOf();
    const lost = secretsLost(session.servers[name], definition);
    if (lost.length && !window.confirm(`Saving ${name} removes its ${lost.join(" and ")}: the server never shows them, so type them again to keep them. Save anyway?`)) return;
    guarded(form.querySelector("button[type=submit]"), async () => {
      await putServer(name, definition);
      newServer();
      await loadServers();
    });
  });
}
