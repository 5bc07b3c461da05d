/* Taking a call, enhanced: the routing preview follows the postcode as it is typed (the page
   works without this: its "Check where it goes" button asks the same), and a second click on
   "Send the enquiry" is not sent (the form's idempotency key would make it harmless anyway). */
(function () {
  "use strict";
  var form = document.getElementById("call-form");
  var region = document.getElementById("routing-preview");
  if (!form || !region || !window.fetch) {
    return;
  }
  var postcode = form.elements.namedItem("postcode");
  var address = form.elements.namedItem("address");
  var service = form.elements.namedItem("service");
  var timer = null;
  var asked = 0;

  function refresh() {
    var mine = ++asked;
    var query = new URLSearchParams();
    query.set("service", service.value);
    query.set("postcode", postcode.value.trim());
    if (address && address.value.trim()) {
      query.set("address", "1"); // only that there is one: its text stays in the form
    }
    fetch("/console/calls/preview?" + query.toString(), {
      credentials: "same-origin",
      redirect: "manual", // signed out: keep the page as it is, never the sign-in page in it
      headers: { Accept: "text/html" },
    })
      .then(function (answer) {
        return answer.ok ? answer.text() : null;
      })
      .then(function (html) {
        if (html !== null && mine === asked) {
          region.innerHTML = html;
        }
      })
      .catch(function () {});
  }

  function soon() {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 250);
  }

  postcode.addEventListener("input", soon);
  if (address) {
    address.addEventListener("input", soon);
  }
  form.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (!button || !button.hasAttribute("data-sends")) {
      return;
    }
    if (form.getAttribute("data-sent") === "yes") {
      event.preventDefault();
      return;
    }
    form.setAttribute("data-sent", "yes");
  });
  // Back to the page from the browser's cache: it may be sent again (intake's key decides).
  window.addEventListener("pageshow", function () {
    form.removeAttribute("data-sent");
  });
})();
