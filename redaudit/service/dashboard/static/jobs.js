// Live job table: polls the JSON API (the login cookie authorises reads) and redraws the rows.
// Text goes in with textContent only: job fields come from users (model names, labels, errors).
(function () {
  "use strict";
  var PERIOD_MS = 1500;
  var body = document.querySelector("#jobs tbody");
  var live = document.getElementById("live");
  if (!body) { return; }

  function cell(row, text, cls) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    if (text !== null && text !== undefined) { td.textContent = String(text); }
    row.appendChild(td);
    return td;
  }

  function render(jobs) {
    var rows = document.createDocumentFragment();
    jobs.forEach(function (job) {
      var tr = document.createElement("tr");
      tr.dataset.job = job.id;
      cell(tr, job.id.slice(0, 8), "mono");
      cell(tr, job.kind);
      cell(tr, job.model_name);
      cell(tr, job.label || "");
      var state = document.createElement("span");
      state.className = "state " + job.state;
      state.textContent = job.state;
      cell(tr, null).appendChild(state);
      var progress = job.progress_stage || "";
      if (job.progress_total) { progress += " " + job.progress_done + "/" + job.progress_total; }
      cell(tr, progress);
      cell(tr, job.attempts, "num");
      cell(tr, job.created_at.slice(0, 19).replace("T", " "));
      var result = cell(tr, null);
      if (job.scan_id) {
        var link = document.createElement("a");
        link.href = "/ui/scans/" + encodeURIComponent(job.scan_id);
        link.textContent = "scan " + job.scan_id;
        result.appendChild(link);
      } else if (job.error) {
        result.textContent = job.error;
      }
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
  }

  function poll() {
    fetch("/api/v1/jobs?limit=100", {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (response.status === 401) { throw new Error("session expired: log in again"); }
        if (!response.ok) { throw new Error("the API answered " + response.status); }
        return response.json();
      })
      .then(function (jobs) {
        render(jobs);
        live.textContent = "live: updated " + new Date().toLocaleTimeString();
        live.className = "";
        window.setTimeout(poll, PERIOD_MS);
      })
      .catch(function (error) {
        live.textContent = "not updating: " + error.message;
        live.className = "error";
        window.setTimeout(poll, PERIOD_MS * 4);
      });
  }

  window.setTimeout(poll, PERIOD_MS);
}());
