"""The app's stylesheet and page script (strings passed to `launch(css=, js=)`).

The script makes in-app links open pages in place: a plain left click on a link whose URL
is this page with `?latent=N[&sae=NAME]` is turned into a navigation inside the app (the
hidden `#clipsae-nav` box, watched by the Browse tab) and pushed onto the browser history;
the back and forward buttons navigate the same way. Modified clicks (new tab, etc.) keep
the browser's behaviour, so every link is also a deep link.
"""

NAV_ID = "clipsae-nav"

PAGE_JS = """
() => {
  const go = (sae, latent) => {
    const box = document.querySelector('#%(nav)s textarea, #%(nav)s input');
    if (!box) return false;
    box.value = [sae, latent, Date.now()].join('|');
    box.dispatchEvent(new Event('input', {bubbles: true}));
    return true;
  };
  document.addEventListener('click', (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = e.target.closest ? e.target.closest('a[href]') : null;
    if (!a) return;
    const url = new URL(a.getAttribute('href'), window.location.href);
    if (url.origin !== window.location.origin || url.pathname !== window.location.pathname
        || !url.searchParams.has('latent')) return;
    e.preventDefault();
    e.stopPropagation();
    if (go(url.searchParams.get('sae') || '', url.searchParams.get('latent') || '')
        && url.search !== window.location.search) {
      history.pushState({}, '', url.search);
    }
  }, true);
  window.addEventListener('popstate', () => {
    const q = new URLSearchParams(window.location.search);
    go(q.get('sae') || '', q.get('latent') || '');
  });
}
""" % {"nav": NAV_ID}

PUSH_URL_JS = """
(data) => {
  if (data && data.sae !== undefined && data.latent !== undefined) {
    const q = '?sae=' + encodeURIComponent(data.sae) + '&latent=' + data.latent;
    if (window.location.search !== q) history.pushState({}, '', q);
  }
  return [];
}
"""

REPLACE_URL_JS = PUSH_URL_JS.replace("pushState", "replaceState")
"""After the first page: a corrected deep link replaces the bad one instead of adding history."""

CSS = """
.clipsae-gallery .grid-wrap.fixed-height { max-height: none !important; min-height: 0 !important;
  height: auto !important; overflow-y: visible !important; }
.clipsae-cols-8 .grid-container { grid-template-columns: repeat(8, minmax(0, 1fr)) !important; }
.clipsae-cols-5 .grid-container { grid-template-columns: repeat(5, minmax(0, 1fr)) !important; }
.clipsae-cols-4 .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
.clipsae-gallery .caption-label {
  white-space: normal !important; max-width: calc(100% - 6px) !important; overflow: visible !important;
  text-overflow: clip !important; font-size: 12px !important; line-height: 1.25 !important; opacity: 0.92 !important;
}
.clipsae-table table { font-variant-numeric: tabular-nums; }
#latent-header h2 { margin-bottom: 0.2em; }
#clipsae-icon img, .clipsae-result img { image-rendering: pixelated; }
@media (max-width: 720px) {
  .clipsae-cols-8 .grid-container, .clipsae-cols-5 .grid-container {
    grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
  .clipsae-gallery .caption-label { font-size: 10px !important; }
}
"""
