// What every screen shares: the remote servers, the chosen one, and the page's settings.

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";

export const session = {
  /** {name: definition} from `servers?expand`. */
  servers: {},
  /** The name chosen in the "Server" select ("" when none is configured). */
  server: "",
  /** DicomWeb.ViewerUrlTemplate, `{uid}` for the StudyInstanceUID ("" when not set). */
  viewerTemplate: meta("dicomweb-viewer-url-template"),
  /** DicomWeb.ServersInDatabase: whether this page may add, edit and remove servers. */
  serversEditable: meta("dicomweb-servers-in-database") === "true",
};
