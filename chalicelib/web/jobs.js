// The Jobs panel: every retrieve and send started from this page, polled at its Path until it
// ends, with a progress bar, a Cancel button, and the outcome in plain words (Orthanc's job
// fields: State, Progress, ErrorDescription, Content).

import { cancelJob, jobStatus, listJobs } from "./api.js";
import { el, guarded, showError } from "./ui.js";

const POLL_MS = 1000;
const FINAL = new Set(["Success", "Failure"]);

/** The outcome of an ended job, from its Content (Orthanc's keys). */
function outcome(job) {
  const content = job.Content || {};
  if (job.State === "Failure") {
    return `Failed: ${job.ErrorDescription || "the server gave no reason"}${job.ErrorCode ? ` (error ${job.ErrorCode})` : ""}.`;
  }
  const parts = [];
  if ("ReceivedInstancesCount" in content) parts.push(`${content.ReceivedInstancesCount} instance(s) retrieved`);
  else if ("InstancesCount" in content) parts.push(`${content.InstancesCount} instance(s) sent`);
  const megabytes = content.NetworkUsageMB ?? content.NetworkSizeMB;
  if (megabytes !== undefined) parts.push(`${megabytes} MB`);
  if (Array.isArray(content.FailedInstances) && content.FailedInstances.length) {
    parts.push(`${content.FailedInstances.length} failed`);
  }
  return parts.length ? `Done: ${parts.join(", ")}.` : "Done.";
}

/**
 * Show and follow a job ({ID, url}) described by `label`; `onEnd(job)` runs once it ends.
 */
export function track(started, label, onEnd = () => {}) {
  document.getElementById("jobs-empty").hidden = true;
  const state = el("span", { class: "state", text: "Pending" });
  const progress = el("progress", { max: "100", value: "0", "aria-label": `Progress of ${label}` });
  const result = el("p", { class: "outcome" });
  const cancel = el("button", { type: "button", text: "Cancel", "aria-label": `Cancel ${label}` });
  const item = el("li", { class: "job", "data-job": started.ID, "data-state": "Pending", "aria-label": label },
    el("div", { class: "job-head" }, el("strong", { text: label }), state),
    el("div", { class: "job-bar" }, progress, cancel),
    result);
  document.getElementById("jobs-list").prepend(item);

  let ended = false;
  const show = (job) => {
    item.dataset.state = job.State;
    state.textContent = job.State + (job.State === "Running" ? ` ${job.Progress ?? 0}%` : "");
    progress.value = job.State === "Success" ? 100 : job.Progress ?? 0;
    if (FINAL.has(job.State) && !ended) {
      ended = true;
      cancel.remove();
      result.textContent = outcome(job);
      result.setAttribute("role", job.State === "Failure" ? "alert" : "status");
      onEnd(job);
    }
  };
  const poll = async () => {
    try {
      show(await jobStatus(started.url));
    } catch (error) {
      item.dataset.state = "Unknown";
      state.textContent = "Unknown";
      result.textContent = error.message;
      result.setAttribute("role", "alert");
    }
    if (!ended) setTimeout(poll, POLL_MS);
  };
  cancel.addEventListener("click", () =>
    guarded(cancel, async () => {
      await cancelJob(started.url);
      show(await jobStatus(started.url));
    }),
  );
  poll();
}

const ACTIONS = { DicomWebStowClient: "Send", DicomWebWadoRetrieveClient: "Retrieve" };

/** Follow the jobs still pending or running on this server (started before a reload, or by
 *  another page): they show in the panel like those started here. */
export async function followRunningJobs() {
  let jobs;
  try {
    jobs = await listJobs();
  } catch (error) {
    // 403: a user without the admin scope, which the list of servers already says.
    if (error.status !== 403) showError(error);
    return;
  }
  const followed = (job) => document.querySelector(`#jobs-list [data-job="${CSS.escape(job.ID)}"]`);
  for (const job of jobs.filter((item) => !FINAL.has(item.State) && !followed(item))) {
    const server = job.Content?.Server ? ` ${job.Type === "DicomWebStowClient" ? "to" : "from"} ${job.Content.Server}` : "";
    track(job, `${ACTIONS[job.Type] || job.Type}${server} (job ${job.ID.slice(0, 8)})`);
  }
}
