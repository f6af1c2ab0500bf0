// The entry module: tabs between the screens (WAI-ARIA tabs pattern: arrow keys move between
// tabs), then each screen's set-up, then the list of remote servers.

import { followRunningJobs } from "./jobs.js";
import { initLocal, searchLocal } from "./local.js";
import { initRemote } from "./remote.js";
import { initServers, loadServers } from "./servers.js";
import { completeSignIn, initSignIn } from "./signin.js";
import { clearMessage, showError } from "./ui.js";

const tabs = [...document.querySelectorAll('[role="tab"]')];

function select(tab) {
  for (const other of tabs) {
    const chosen = other === tab;
    other.setAttribute("aria-selected", String(chosen));
    other.tabIndex = chosen ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")).hidden = !chosen;
  }
  if (tab.id === "tab-local") searchLocal();
  if (tab.id === "tab-servers") loadServers();
  followRunningJobs();
}

for (const [index, tab] of tabs.entries()) {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = tabs[(index + step + tabs.length) % tabs.length];
    next.focus();
    select(next);
  });
}

document.getElementById("message-close").addEventListener("click", clearMessage);
await completeSignIn().catch(showError);
initSignIn(showError);
initServers();
initRemote();
initLocal();
loadServers();
followRunningJobs();
