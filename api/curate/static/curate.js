// The curation page's behaviour on top of plain forms: live counters, in-place review actions,
// bulk selection, keyboard shortcuts and confirmations. Every form also works without it.
// Text from the server (tweets, messages) is only ever set with textContent, never as HTML.
"use strict";

(function () {
  const flash = document.getElementById("flash");
  const reviewList = document.getElementById("review-list");
  const bulkForm = document.getElementById("bulk-form");
  const selectAll = document.getElementById("select-all");
  const selectedCount = document.getElementById("selected-count");

  // The upload's result page answers a POST: reloading it would send the file again. Give it
  // the review list's address, so a reload (ours below, or the curator's) shows the list.
  if (window.location.pathname.replace(/\/$/, "") === "/curate/upload") {
    window.history.replaceState(null, "", "/curate" + window.location.search); // keeps ?bot=NAME
  }

  function showMessage(text, isError) {
    if (!flash) return;
    flash.textContent = text;
    flash.classList.toggle("flash-error", Boolean(isError));
    flash.hidden = false;
  }

  function updateCounts(counts) {
    if (!counts) return;
    for (const badge of document.querySelectorAll("[data-count]")) {
      const value = counts[badge.dataset.count];
      if (value !== undefined) badge.textContent = String(value);
    }
  }

  // ---- upload size (the server checks it again, before reading the file) ----
  for (const input of document.querySelectorAll("input[type=file][data-max-bytes]")) {
    const maxBytes = Number(input.dataset.maxBytes);
    let shown = "";
    input.addEventListener("change", () => {
      const tooLarge = Array.from(input.files).find((file) => file.size > maxBytes);
      const problem = tooLarge
        ? `${tooLarge.name} is ${tooLarge.size.toLocaleString("en-US")} bytes, over the ` +
          `${maxBytes.toLocaleString("en-US")}-byte limit (MAX_UPLOAD_BYTES): split the file and upload the parts. Nothing was sent.`
        : "";
      input.setCustomValidity(problem); // the browser then refuses to send the form
      if (problem) showMessage(problem, true);
      else if (flash && shown && flash.textContent === shown) flash.hidden = true; // a smaller file was chosen
      shown = problem;
    });
  }

  // ---- live counters (the server re-checks every save) ----
  // The textarea names its bot's destinations (data-destinations) and its Mastodon instance's limit.
  // One destination: "120/280", "281/280 · over 280". Several: each one's count, its reason to refuse
  // the text in parentheses, and where the text would go when some refuse it ("posted only to
  // Mastodon"). Saving is blocked only when every destination refuses it, as the server does.
  function counterParts(problem, destinations) {
    if (destinations.length === 1) {
      const [only] = destinations;
      return [{ text: `${only.length}/${only.max}` + (only.problem ? ` · ${only.problem}` : ""), over: Boolean(only.problem) }];
    }
    const parts = destinations.map((destination) => ({
      text: `${destination.name} ${destination.length}/${destination.max}` +
        (destination.problem && !problem ? ` (${destination.problem})` : ""),
      over: Boolean(destination.problem),
    }));
    const takers = destinations.filter((destination) => !destination.problem);
    if (problem) parts.push({ text: problem, over: true });
    else if (takers.length && takers.length < destinations.length) {
      parts.push({ text: `posted only to ${takers.map((destination) => destination.name).join(", ")}`, over: false });
    }
    return parts;
  }

  function updateCounter(textarea) {
    const output = document.getElementById(textarea.dataset.counter);
    const networks = (textarea.dataset.destinations || "x").split(",");
    const limits = { mastodonMaxCharacters: Number(textarea.dataset.mastodonMaxCharacters) };
    const { problem, destinations } = window.TweetCounter.check(textarea.value, networks, limits);
    const refused = destinations.every((destination) => destination.problem);
    const nodes = [];
    for (const part of counterParts(problem, destinations)) {
      if (nodes.length) nodes.push(" · ");
      const span = document.createElement("span");
      span.textContent = part.text;
      span.classList.toggle("over", part.over);
      nodes.push(span);
    }
    output.replaceChildren(...nodes);
    output.classList.toggle("over", refused);
    for (const button of textarea.form.querySelectorAll("button[type=submit]")) button.disabled = refused;
  }

  if (window.TweetCounter) {
    for (const textarea of document.querySelectorAll("textarea[data-counter]")) {
      textarea.addEventListener("input", () => updateCounter(textarea));
      updateCounter(textarea);
    }
  }

  // ---- review cards ----
  const cards = () => Array.from(reviewList ? reviewList.querySelectorAll(".card") : []);
  const currentCard = () => (document.activeElement ? document.activeElement.closest(".card") : null);

  function focusCard(card) {
    if (!card) return;
    card.focus();
    card.scrollIntoView({ block: "nearest" });
  }

  function moveFocus(step) {
    const all = cards();
    if (!all.length) return;
    const index = all.indexOf(currentCard());
    const next = index === -1 ? (step > 0 ? 0 : all.length - 1) : Math.min(Math.max(index + step, 0), all.length - 1);
    focusCard(all[next]);
  }

  // Remove the cards an action changed; the focus goes to the next candidate after `anchor`
  // (the card the curator was on), so a run of a/r/e keeps going down the list. When the
  // last shown card goes and more are pending, reload for the next page of candidates.
  function removeCards(ids, anchor, pendingLeft) {
    const all = cards();
    let nextFocus = null;
    if (anchor && all.includes(anchor)) {
      const at = all.indexOf(anchor);
      const after = all.slice(at).concat(all.slice(0, at).reverse());
      nextFocus = after.find((card) => !ids.includes(Number(card.dataset.tweetId))) || null;
    }
    for (const id of ids) {
      const card = document.getElementById(`tweet-${id}`);
      if (card) card.remove();
    }
    updateSelection();
    if (!cards().length && pendingLeft > 0) {
      window.location.reload();
      return;
    }
    if (nextFocus) focusCard(nextFocus);
  }

  function showCardError(form, text) {
    const card = form.closest(".card");
    const target = card ? card.querySelector(".card-error") : null;
    if (target) {
      target.textContent = text;
      target.hidden = false;
    } else {
      showMessage(text, true);
    }
  }

  async function submitInPlace(form, submitter) {
    const anchor = currentCard() || form.closest(".card");
    const action = submitter && submitter.hasAttribute("formaction") ? submitter.formAction : form.action;
    const buttons = Array.from(form.querySelectorAll("button"));
    buttons.forEach((button) => (button.disabled = true));
    try {
      const response = await fetch(action, {
        method: "POST",
        body: new FormData(form, submitter || undefined),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      const body = await response.json().catch(() => ({ detail: `The server answered ${response.status}.` }));
      if (!response.ok) {
        showCardError(form, body.detail || `The server answered ${response.status}.`);
        return;
      }
      showMessage(body.message, body.skipped && body.skipped.length > 0);
      updateCounts(body.counts);
      removeCards(body.changed || [], anchor, body.counts ? body.counts.pending : 0);
    } catch (error) {
      showCardError(form, "The server could not be reached; nothing was changed. Try again.");
    } finally {
      buttons.forEach((button) => (button.disabled = false));
      const textarea = form.querySelector("textarea[data-counter]");
      if (textarea && textarea.isConnected) updateCounter(textarea);
    }
  }

  for (const form of document.querySelectorAll("form[data-action]")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (form === bulkForm && !selectedIds().length) {
        showMessage("Select candidates first (x, or the boxes).", true);
        return;
      }
      submitInPlace(form, event.submitter);
    });
  }

  // ---- bulk selection ----
  function selectedIds() {
    return Array.from(document.querySelectorAll("input[name=ids][form=bulk-form]:checked"), (box) => Number(box.value));
  }

  function updateSelection() {
    if (!bulkForm) return;
    const boxes = document.querySelectorAll("input[name=ids][form=bulk-form]");
    const chosen = selectedIds().length;
    selectedCount.textContent = chosen ? `${chosen} selected` : "";
    selectAll.checked = chosen > 0 && chosen === boxes.length;
    selectAll.indeterminate = chosen > 0 && chosen < boxes.length;
  }

  if (bulkForm) {
    selectAll.addEventListener("change", () => {
      for (const box of document.querySelectorAll("input[name=ids][form=bulk-form]")) box.checked = selectAll.checked;
      updateSelection();
    });
    document.addEventListener("change", (event) => {
      if (event.target.matches("input[name=ids][form=bulk-form]")) updateSelection();
    });
  }

  function submitBulk(path) {
    const button = bulkForm.querySelector(`button[formaction^="${path}"]`); // the path, then ?bot=NAME if any
    if (button) bulkForm.requestSubmit(button);
  }

  // ---- editing ----
  function openEditor(card) {
    const details = card.querySelector("details.edit");
    details.open = true;
    const textarea = details.querySelector("textarea");
    textarea.focus();
    textarea.setSelectionRange(textarea.value.length, textarea.value.length);
  }

  function closeEditor(textarea) {
    const details = textarea.closest("details.edit");
    textarea.value = textarea.defaultValue;
    updateCounter(textarea);
    details.open = false;
    focusCard(textarea.closest(".card"));
  }

  // ---- keyboard shortcuts (listed on the page) ----
  document.addEventListener("keydown", (event) => {
    if (!reviewList) return;
    const target = event.target;
    if (target.matches("textarea[data-counter]")) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        const button = target.form.querySelector("button[type=submit]");
        if (!button.disabled) target.form.requestSubmit(button);
      } else if (event.key === "Escape") {
        event.preventDefault();
        closeEditor(target);
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || target.matches("input[type=text], input[type=password], input[type=file], textarea, select")) return;
    const card = currentCard();
    const act = (selector) => {
      const form = card && card.querySelector(selector);
      if (form) form.requestSubmit();
    };
    switch (event.key) {
      case "j":
      case "ArrowDown":
        moveFocus(1);
        break;
      case "k":
      case "ArrowUp":
        moveFocus(-1);
        break;
      case "a":
        act("form[data-action=approve]");
        break;
      case "r":
        act("form[data-action=reject]");
        break;
      case "e":
        if (card) openEditor(card);
        break;
      case "x":
        if (card) {
          const box = card.querySelector("input[name=ids]");
          box.checked = !box.checked;
          updateSelection();
        }
        break;
      case "A":
        submitBulk("/curate/approve");
        break;
      case "R":
        submitBulk("/curate/reject");
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  // ---- confirmations and one-shot buttons (queue and history) ----
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  for (const form of document.querySelectorAll("form[data-once]")) {
    form.addEventListener("submit", (event) => {
      if (form.dataset.sent) {
        event.preventDefault();
        return;
      }
      form.dataset.sent = "true";
      // Disable after the browser has taken the form's data (a disabled button is not sent).
      setTimeout(() => form.querySelectorAll("button").forEach((button) => (button.disabled = true)), 0);
    });
  }

  // Start on the first candidate, so the shortcuts work at once.
  if (reviewList && document.activeElement === document.body && cards().length) {
    cards()[0].focus({ preventScroll: true });
  }
})();
