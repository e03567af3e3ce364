/*
 * <related-items>: the storefront carousel of the related-items API, as one dependency-free
 * custom element with a shadow DOM. Served by the API at /widget/related-items.js.
 *
 *   <script src="https://api.example/widget/related-items.js" defer></script>
 *   <related-items product-id="42"></related-items>
 *
 * Attributes:
 *   product-id     the product whose related items to show (required)
 *   api            the API's base URL; default: where this script was loaded from
 *   limit          how many items to ask for, 1 to 100 (default 16)
 *   per-page       cards shown at a time (default 4; fewer when the element is narrow)
 *   href-template  each card's link, {id} replaced by the item's id (default /products/{id})
 *   heading        the title above the cards (default "Related items")
 *   currency       ISO 4217 code of price_cents (default USD)
 *
 * The element's data-state attribute is loading, ready, empty or error, and it fires a
 * "related-items:state" event on every change, so a page (or a test) can follow it.
 * refresh() reloads; a reload revalidates with the last ETag (If-None-Match) and a 304 keeps
 * the cards already fetched.
 */
(() => {
  "use strict";
  if (!window.customElements || customElements.get("related-items")) return;

  // The default API is the origin (and path prefix) this script came from: the API serves it.
  const scriptSrc = document.currentScript && document.currentScript.src;
  const defaultApi = scriptSrc ? new URL("..", scriptSrc).href : location.origin + "/";
  const TIMEOUT_MS = 10000;

  // Validated responses by URL, shared by every element on the page: what a 304 refers to.
  const responses = new Map();

  const STYLE = `
    :host { display: block; font: 15px/1.4 var(--ri-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
            color: var(--ri-text, #1d2330); --accent: var(--ri-accent, #1f5fd1); }
    :host([hidden]) { display: none; }
    .root { position: relative; }
    .head { display: flex; align-items: center; justify-content: space-between; gap: 12px; margin: 0 0 10px; }
    h2 { font-size: 1.15em; margin: 0; }
    .nav { display: flex; align-items: center; gap: 8px; }
    .nav[hidden] { display: none; }
    .nav button { width: 36px; height: 36px; border-radius: 50%; border: 1px solid #c5cbd6; background: #fff;
                  font-size: 20px; line-height: 1; cursor: pointer; color: inherit; display: grid; place-items: center; }
    .nav button:hover:not(:disabled) { border-color: var(--accent); color: var(--accent); }
    .nav button:disabled { opacity: .35; cursor: default; }
    button:focus-visible, a:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
    .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
    ul { list-style: none; margin: 0; padding: 0; display: grid; gap: 16px;
         grid-template-columns: repeat(var(--per-page, 4), minmax(0, 1fr)); }
    li[hidden] { display: none; }
    a.card { display: flex; flex-direction: column; height: 100%; box-sizing: border-box; padding: 10px;
             border: 1px solid #e2e6ee; border-radius: 10px; background: #fff; color: inherit; text-decoration: none; }
    a.card:hover { border-color: var(--accent); }
    .media { aspect-ratio: 4 / 3; border-radius: 6px; overflow: hidden; background: #eef1f6; margin-bottom: 8px;
             display: grid; place-items: center; }
    .media img { width: 100%; height: 100%; object-fit: cover; display: block; }
    .media .placeholder { display: none; font-size: 13px; font-weight: 600; color: #5b6474; letter-spacing: .04em;
                          text-transform: uppercase; text-align: center; padding: 0 8px; }
    .media.broken img { display: none; }
    .media.broken .placeholder { display: block; }
    .category { font-size: 12px; text-transform: uppercase; letter-spacing: .05em; color: #5b6474; }
    .name { font-weight: 600; margin: 2px 0 6px; overflow-wrap: anywhere; }
    .price { font-weight: 700; margin-top: auto; }
    .rating { font-size: 13px; color: #5b6474; }
    .stars { color: #d99a00; letter-spacing: 1px; }
    .skeleton .media, .skeleton .line { background: linear-gradient(90deg, #eef1f6, #f7f8fb, #eef1f6); background-size: 200% 100%;
             animation: shimmer 1.2s infinite linear; }
    .skeleton .line { height: 12px; border-radius: 4px; margin: 6px 0; }
    .skeleton .line.short { width: 55%; }
    @keyframes shimmer { to { background-position: -200% 0; } }
    @media (prefers-reduced-motion: reduce) { .skeleton .media, .skeleton .line { animation: none; } }
    .message { border: 1px dashed #c5cbd6; border-radius: 10px; padding: 22px; text-align: center; color: #3d4556; }
    .message.error { border-color: #d45b5b; background: #fff6f6; }
    .message p { margin: 0 0 10px; }
    .message p:last-child { margin: 0; }
    .retry { font: inherit; padding: 6px 14px; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent);
             color: #fff; cursor: pointer; }
    .page { font-size: 13px; color: #5b6474; min-width: 4em; text-align: right; }
  `;

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === false || v === null || v === undefined) continue;
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c) node.append(c);
    return node;
  };

  const intAttr = (value, fallback, min, max) => {
    const n = Number.parseInt(value, 10);
    return Number.isInteger(n) && n >= min && n <= max ? n : fallback;
  };

  // Only http(s) URLs reach an href or src: the data is the catalog's, not ours to trust.
  const safeUrl = (text, base) => {
    try {
      const url = new URL(text, base);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  };

  // The API's error slug, to tell an unknown product (empty) from a wrong URL (error).
  const errorCode = async (response) => {
    try {
      return (await response.json()).code;
    } catch (_) {
      return null;
    }
  };

  class RelatedItems extends HTMLElement {
    static get observedAttributes() {
      return ["product-id", "api", "limit", "per-page", "href-template", "heading", "currency"];
    }

    constructor() {
      super();
      this._items = [];
      this._page = 0;
      this._controller = null;
      this._loadedAt = 0;
      const root = this.attachShadow({ mode: "open" });
      root.append(el("style", { text: STYLE }));
      this._title = el("h2", { part: "heading", id: "heading" });
      this._pageLabel = el("span", { class: "page", "aria-hidden": "true" });
      this._prev = el("button", { type: "button", class: "prev", part: "button", "aria-label": "Previous items", text: "\u2039" });
      this._next = el("button", { type: "button", class: "next", part: "button", "aria-label": "Next items", text: "\u203a" });
      this._prev.addEventListener("click", () => this._go(-1));
      this._next.addEventListener("click", () => this._go(1));
      // Arrows only while there are cards to page through.
      this._nav = el("div", { class: "nav", hidden: true }, this._pageLabel, this._prev, this._next);
      this._status = el("p", { class: "sr", role: "status", "aria-live": "polite", "aria-atomic": "true" });
      this._body = el("div", { class: "body" });
      this._section = el(
        "section",
        { class: "root", "aria-roledescription": "carousel", "aria-labelledby": "heading" },
        el("div", { class: "head" }, this._title, this._nav),
        this._status,
        this._body,
      );
      // Arrow keys page while focus is inside the carousel, as in most carousels.
      this._section.addEventListener("keydown", (e) => {
        if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
          if (this._go(e.key === "ArrowLeft" ? -1 : 1)) e.preventDefault();
        }
      });
      root.append(this._section);
      this._onVisible = () => {
        // A tab shown again after a while revalidates: usually a cheap 304.
        if (document.visibilityState === "visible" && Date.now() - this._loadedAt > 60000) this.refresh();
      };
      this._resize = typeof ResizeObserver === "function" ? new ResizeObserver(() => this._layout()) : null;
    }

    connectedCallback() {
      document.addEventListener("visibilitychange", this._onVisible);
      if (this._resize) this._resize.observe(this);
      this._title.textContent = this.getAttribute("heading") || "Related items";
      this.refresh();
    }

    disconnectedCallback() {
      document.removeEventListener("visibilitychange", this._onVisible);
      if (this._resize) this._resize.disconnect();
      if (this._controller) this._controller.abort();
    }

    attributeChangedCallback(name, oldValue, newValue) {
      if (!this.isConnected || oldValue === newValue) return;
      if (name === "heading") this._title.textContent = newValue || "Related items";
      else if (name === "per-page") this._layout();
      else this.refresh();
    }

    /** Loads (or revalidates) the items; resolves when the new state is shown. */
    async refresh() {
      const id = intAttr(this.getAttribute("product-id"), null, 1, 2147483647);
      if (id === null) {
        this._setState("error", "This carousel has no valid product-id.", null);
        return;
      }
      const limit = intAttr(this.getAttribute("limit"), 16, 1, 100);
      const base = safeUrl(this.getAttribute("api") || defaultApi, location.href);
      if (!base) {
        this._setState("error", "This carousel's api attribute is not an http(s) URL.", null);
        return;
      }
      const url = new URL(`products/${id}/related?limit=${limit}`, base.endsWith("/") ? base : base + "/").href;
      if (this._controller) this._controller.abort();
      const controller = new AbortController();
      this._controller = controller;
      const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
      // A reload keeps the cards it has while it revalidates; a first load shows placeholders.
      if (!this._items.length || this._url !== url) this._showLoading();
      const cached = responses.get(url);
      let outcome;
      try {
        const response = await fetch(url, {
          mode: "cors",
          credentials: "omit",
          signal: controller.signal,
          // A header the browser cannot add itself: the page's own ETag makes the API answer
          // 304 without a body when nothing changed (and asks for a CORS preflight, which the
          // API answers and the browser caches).
          headers: cached ? { "If-None-Match": cached.etag } : {},
        });
        if (response.status === 304 && cached) {
          outcome = { status: 304, data: cached.data };
        } else if (response.ok) {
          const data = await response.json();
          const etag = response.headers.get("ETag");
          if (etag) responses.set(url, { etag, data });
          outcome = { status: response.status, data };
        } else if (response.status === 404 && (await errorCode(response)) === "product_not_found") {
          outcome = { status: 404, data: { items: [] } };
        } else {
          outcome = { status: response.status, error: `The server answered ${response.status}.` };
        }
      } catch (e) {
        if (controller !== this._controller) return; // superseded by a newer load
        outcome = { status: 0, error: e && e.name === "AbortError" ? "The server did not answer in time." : "The server could not be reached." };
      } finally {
        clearTimeout(timer);
      }
      if (controller !== this._controller) return;
      this._controller = null;
      this._url = url;
      this._loadedAt = Date.now();
      this.dataset.lastStatus = String(outcome.status);
      if (outcome.error) {
        this._items = [];
        this._setState("error", "Related items could not be loaded.", outcome.error);
        return;
      }
      const items = Array.isArray(outcome.data && outcome.data.items) ? outcome.data.items : [];
      const same = items === this._items;
      this._items = items;
      if (!items.length) {
        this._setState("empty", "No related items for this product.", null);
        return;
      }
      if (!same) this._page = 0;
      this._renderCards();
      this._setState("ready", null, null);
    }

    _perPage() {
      const wanted = intAttr(this.getAttribute("per-page"), 4, 1, 12);
      const width = this.clientWidth;
      // A phone-width carousel keeps cards readable by showing fewer at a time.
      if (width && width < 360) return 1;
      if (width && width < 600) return Math.min(wanted, 2);
      return wanted;
    }

    _pages() {
      return Math.max(1, Math.ceil(this._items.length / this._perPage()));
    }

    _go(delta) {
      const page = this._page + delta;
      if (this.dataset.state !== "ready" || page < 0 || page >= this._pages()) return false;
      this._page = page;
      this._layout();
      return true;
    }

    _layout() {
      const per = this._perPage();
      this._section.style.setProperty("--per-page", String(per));
      const pages = this._pages();
      if (this._page >= pages) this._page = pages - 1;
      const ready = this.dataset.state === "ready" && this._list;
      this._prev.disabled = !ready || this._page === 0;
      this._next.disabled = !ready || this._page >= pages - 1;
      this._nav.hidden = !ready || pages < 2;
      if (!ready) {
        this._pageLabel.textContent = "";
        return;
      }
      const first = this._page * per;
      const last = Math.min(first + per, this._items.length);
      this._list.querySelectorAll("li").forEach((li, i) => {
        li.hidden = i < first || i >= last;
      });
      this._pageLabel.textContent = `${this._page + 1} / ${pages}`;
      this._announce(`Items ${first + 1} to ${last} of ${this._items.length}.`);
    }

    _showLoading() {
      this._list = null;
      const list = el("ul", { role: "list", "aria-hidden": "true" });
      for (let i = 0; i < this._perPage(); i++) {
        list.append(
          el("li", { class: "skeleton" },
            el("div", { class: "card" }, el("div", { class: "media" }), el("div", { class: "line" }), el("div", { class: "line short" }))),
        );
      }
      this._body.replaceChildren(list);
      this._section.setAttribute("aria-busy", "true");
      this.dataset.state = "loading";
      this._announce("Loading related items\u2026");
      this._layout();
      this._emit();
    }

    _renderCards() {
      const money = new Intl.NumberFormat(undefined, { style: "currency", currency: this.getAttribute("currency") || "USD" });
      const template = this.getAttribute("href-template") || "/products/{id}";
      const list = el("ul", { role: "list", part: "list" });
      this._items.forEach((item, i) => {
        const id = Number(item.id);
        const href = safeUrl(template.replace("{id}", encodeURIComponent(id)), location.href) || "#";
        const media = el("div", { class: "media" });
        const src = safeUrl(item.image_url, location.href);
        const placeholder = el("span", { class: "placeholder", "aria-hidden": "true", text: item.category || "" });
        if (src) {
          // The name is the link's text; the image adds nothing for a screen reader.
          const img = el("img", { src, alt: "", loading: "lazy", decoding: "async", width: 240, height: 180 });
          img.addEventListener("error", () => media.classList.add("broken"), { once: true });
          media.append(img);
        } else {
          media.classList.add("broken");
        }
        media.append(placeholder);
        const rating = Number(item.rating) || 0;
        const reviews = Number(item.review_count) || 0;
        const full = Math.round(rating);
        const ratingNode = reviews > 0
          ? el("span", { class: "rating" },
              el("span", { class: "stars", "aria-hidden": "true", text: "\u2605".repeat(full) + "\u2606".repeat(5 - full) }),
              el("span", { "aria-hidden": "true", text: ` ${rating.toFixed(1)} (${reviews.toLocaleString()})` }),
              el("span", { class: "sr", text: `Rated ${rating.toFixed(1)} out of 5 from ${reviews.toLocaleString()} reviews` }))
          : el("span", { class: "rating", text: "No reviews yet" });
        const card = el("a", { class: "card", part: "card", href },
          media,
          el("span", { class: "category", text: item.category || "" }),
          el("span", { class: "name", text: item.name || "" }),
          ratingNode,
          el("span", { class: "price", text: money.format((Number(item.price_cents) || 0) / 100) }),
        );
        list.append(el("li", { "aria-posinset": i + 1, "aria-setsize": this._items.length }, card));
      });
      this._list = list;
      this._body.replaceChildren(list);
    }

    _setState(state, message, detail) {
      this._section.removeAttribute("aria-busy");
      this.dataset.state = state;
      if (state !== "ready") {
        this._list = null;
        const box = el("div", { class: `message ${state}`, part: state }, el("p", { text: message }));
        if (state === "error") {
          if (detail) box.append(el("p", { text: detail }));
          const retry = el("button", { type: "button", class: "retry", text: "Try again" });
          retry.addEventListener("click", () => this.refresh());
          box.append(el("p", {}, retry));
        }
        this._body.replaceChildren(box);
        this._announce(detail ? `${message} ${detail}` : message);
      }
      this._layout();
      this._emit();
    }

    // Only a change is written to the live region: rewriting the same text (a resize relayout)
    // would make some screen readers say it again.
    _announce(text) {
      if (this._status.textContent !== text) this._status.textContent = text;
    }

    _emit() {
      this.dispatchEvent(new CustomEvent("related-items:state", { detail: { state: this.dataset.state }, bubbles: true }));
    }
  }

  customElements.define("related-items", RelatedItems);
})();
