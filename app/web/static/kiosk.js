// The kiosk's receipt: a Print button, shown only where this script runs (without it the
// page says to ask a member of staff for a printed copy).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("print");
  const hint = document.getElementById("print-hint");
  if (!button || typeof window.print !== "function") {
    return;
  }
  button.hidden = false;
  if (hint) {
    hint.hidden = true;
  }
  button.addEventListener("click", () => window.print());
});
