// hud view: a running job's page polls its counts and reloads when runs finish; the jobs
// list reloads every few seconds while any job runs.
(function () {
  "use strict";
  var list = document.getElementById("jobs");
  if (list && list.dataset.live === "true") setTimeout(function () { window.location.reload(); }, 3000);
  var job = document.getElementById("job");
  if (!job || job.dataset.running !== "true") return;
  var seen = job.dataset.runs;
  function poll() {
    fetch("/api/jobs/" + job.dataset.job, {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (s) {
        if (String(s.runs) !== seen || !s.running) {
          sessionStorage.setItem("hud-scroll", String(window.scrollY));
          window.location.reload();
          return;
        }
        setTimeout(poll, 1500);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  var y = sessionStorage.getItem("hud-scroll");
  if (y !== null) { window.scrollTo(0, Number(y)); sessionStorage.removeItem("hud-scroll"); }
  setTimeout(poll, 1500);
})();
