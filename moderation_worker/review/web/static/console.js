// The review console's keyboard, the image reveal and the claim's renewal. Vendored, no framework.
(function () {
  "use strict";
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const typing = (event) => ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName);

  function reveal() {
    const figure = document.getElementById("picture");
    if (figure) figure.classList.remove("blurred");
  }

  function click(id) {
    const button = document.getElementById(id);
    if (button) button.click();
  }

  function renewEvery(layout) {
    const url = layout.dataset.renewUrl;
    const leaseS = parseFloat(layout.dataset.leaseS || "600");
    if (!url || layout.dataset.claimed !== "yes") return;
    // Renew at a third of the lease, so one missed renewal never loses the claim.
    setInterval(() => {
      fetch(url, { method: "POST", headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" })
        .then((response) => { if (response.status === 409) layout.dataset.claimed = "lost"; });
    }, Math.max(5, leaseS / 3) * 1000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const revealButton = document.getElementById("reveal");
    if (revealButton) revealButton.addEventListener("click", reveal);
    const layout = document.querySelector(".item-layout");
    if (layout) renewEvery(layout);
    const overturn = document.getElementById("overturn");
    if (overturn) {
      overturn.addEventListener("click", (event) => {
        const reason = document.getElementById("reason");
        if (reason && !reason.value.trim()) {  // the server refuses it too; say so at once
          event.preventDefault();
          reason.focus();
          reason.setAttribute("placeholder", "A reason is needed to overturn");
        }
      });
    }
  });

  document.addEventListener("keydown", (event) => {
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const page = document.body.dataset.page;
    const keys = page === "item"
      ? { u: () => click("uphold"), o: () => click("overturn"), e: () => click("escalate"), s: () => click("skip"), r: reveal }
      : page === "queue" ? { n: () => click("take-next") } : {};
    const action = keys[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });
})();
