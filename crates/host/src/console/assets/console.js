// The console's script, served at /assets/console.js (the CSP runs only the console's own
// scripts): a form's submit button stays disabled until its confirmation box is ticked, so
// the box reads as the step it is. Without JavaScript the box is still required (by the
// browser and by the server).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form.action")) {
    const confirm = form.querySelector('input[name="confirm"]');
    const button = form.querySelector('button[type="submit"]');
    if (!confirm || !button) continue;
    const sync = () => { button.disabled = !confirm.checked; };
    confirm.addEventListener("change", sync);
    sync();
  }
});
