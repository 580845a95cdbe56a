// The console's one script. Every page works without it.
// - A form with `data-busy` ("Log in now") says what is happening while its request runs.
// - The refresh-all page's bar moves with the run's server-sent events (without the script,
//   the page says to reload).
(function () {
  "use strict";
  document.querySelectorAll("form[data-busy]").forEach(function (form) {
    form.addEventListener("submit", function () {
      var button = form.querySelector("button");
      if (button) {
        button.disabled = true;
        button.textContent = form.getAttribute("data-busy");
      }
    });
  });
  var section = document.getElementById("refresh-all");
  if (!section || !window.EventSource) {
    return;
  }
  function set(id, value) {
    var element = document.getElementById(id);
    if (element) {
      element.textContent = String(value);
    }
  }
  var source = new EventSource(section.getAttribute("data-events"));
  function show(event) {
    var p = JSON.parse(event.data);
    var bar = document.getElementById("refresh-bar");
    bar.max = Math.max(p.total, 1);
    bar.value = p.done;
    set("refresh-successful", p.successful);
    set("refresh-failed", p.failed);
    set("refresh-skipped", p.skipped);
    set("refresh-total", p.total);
    if (p.finished) {
      source.close();
      set("refresh-state", "Finished: " + p.successful + " successful, " + p.failed +
        " failed, " + p.skipped + " skipped, of " + p.total + ".");
      document.getElementById("refresh-done").hidden = false;
    } else {
      set("refresh-state", "Logging in: " + p.done + " of " + p.total + " accounts done.");
    }
  }
  source.addEventListener("progress", show);
  source.addEventListener("done", show);
})();
