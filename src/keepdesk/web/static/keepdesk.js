// keepdesk: keyboard shortcuts and a few small behaviours. Loaded as a file (the CSP allows no
// inline script); everything hangs off data- attributes, so HTMX-swapped content just works.
//   j / k    next / previous ticket in a list      Enter  open it
//   r        reply                                  n      internal note
//   a        assign the ticket to me                ?      show the keys
"use strict";

(function () {
  function typing(target) {
    if (!(target instanceof Element)) return false;
    return target.closest("input, textarea, select, [contenteditable]") !== null;
  }

  function rows() {
    return Array.from(document.querySelectorAll("[data-list] [data-row]"));
  }

  function current() {
    return document.querySelector("[data-list] [data-row].is-current");
  }

  function move(step) {
    const all = rows();
    if (all.length === 0) return;
    const now = current();
    let index = now ? all.indexOf(now) + step : 0;
    index = Math.max(0, Math.min(all.length - 1, index));
    if (now) now.classList.remove("is-current");
    const next = all[index];
    next.classList.add("is-current");
    next.scrollIntoView({ block: "nearest" });
    const link = next.querySelector("a[data-open]");
    if (link) link.focus({ preventScroll: true });
  }

  function openCurrent() {
    const row = current();
    const link = row && row.querySelector("a[data-open]");
    if (link) {
      link.click();
      return true;
    }
    return false;
  }

  function compose(kind) {
    const radio = document.querySelector('#composer input[name="kind"][value="' + kind + '"]');
    const body = document.querySelector("#composer textarea[name='body']");
    if (!body) return;
    if (radio) {
      radio.checked = true;
      radio.dispatchEvent(new Event("change", { bubbles: true }));
    }
    body.focus();
  }

  function showKeys() {
    const dialog = document.getElementById("keys");
    if (dialog && !dialog.open) dialog.showModal();
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape" && typing(event.target)) {
      event.target.blur();
      return;
    }
    if (typing(event.target)) return;
    if (document.querySelector("dialog[open]")) return;
    switch (event.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "Enter":
        if (!openCurrent()) return;
        break;
      case "r": compose("reply"); break;
      case "n": compose("note"); break;
      case "a": {
        const button = document.querySelector('[data-shortcut="assign-me"]');
        if (!button) return;
        button.click();
        break;
      }
      case "?": showKeys(); break;
      default: return;
    }
    event.preventDefault();
  });

  document.addEventListener("click", function (event) {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    if (target.closest("[data-keys-help]")) {
      showKeys();
      return;
    }
    // Remote images of one message: point its sandboxed frame at the variant that allows them.
    const images = target.closest("a[data-remote-images]");
    if (images) {
      const frame = document.getElementById(images.dataset.frame || "");
      if (frame) {
        event.preventDefault();
        frame.setAttribute("src", images.dataset.src || "");
        images.remove();
      }
    }
  });

  document.addEventListener("change", function (event) {
    const target = event.target;
    if (!(target instanceof HTMLInputElement)) return;
    if (target.matches("[data-select-all]")) {
      const list = target.closest("[data-list]");
      if (list) {
        list.querySelectorAll('input[type="checkbox"][name="numbers"]').forEach(function (box) {
          box.checked = target.checked;
        });
      }
    }
    if (target.name === "kind" && target.closest("#composer")) {
      const composer = target.closest("#composer");
      composer.classList.toggle("is-note", target.value === "note" && target.checked);
      const send = composer.querySelector("[data-send-label]");
      if (send) send.textContent = target.value === "note" ? "Add note" : "Send reply";
    }
  });

  // Presence: the heartbeat (#presence polls) says whether this agent is typing, that is, the
  // composer has text. Read at each request, so a re-rendered ticket head cannot lose it; and
  // when the composer fills or empties, a heartbeat goes at once instead of at the next poll.
  function composing() {
    const body = document.querySelector("#composer textarea[name='body']");
    return body !== null && body.value.trim() !== "";
  }

  let wasComposing = false;

  document.addEventListener("htmx:configRequest", function (event) {
    const source = event.detail.elt;
    if (!(source instanceof Element) || !source.matches("[data-presence]")) return;
    wasComposing = composing();
    event.detail.parameters.typing = wasComposing ? "1" : "0";
  });

  document.addEventListener("input", function (event) {
    const target = event.target;
    if (!(target instanceof HTMLTextAreaElement) || !target.closest("#composer")) return;
    const presence = document.querySelector("[data-presence]");
    if (presence && window.htmx && composing() !== wasComposing) {
      window.htmx.trigger(presence, "presence-change");
    }
  });

  // A request that never reached the server: say so where errors are shown.
  document.addEventListener("htmx:sendError", function () {
    const flash = document.getElementById("flash");
    if (flash) {
      flash.textContent = "";
      const p = document.createElement("p");
      p.className = "notice error";
      p.setAttribute("role", "alert");
      p.textContent = "keepdesk could not be reached. Check the connection and try again.";
      flash.appendChild(p);
    }
  });
})();
