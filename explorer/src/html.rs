//! HTML building blocks: escaping (every piece of workflow data is hostile), URL path segments, the
//! page shell, and the static stylesheet and script (served from `/static/`, so that the pages hold
//! no inline script at all and the Content-Security-Policy can be `script-src 'self'`).

use std::fmt::Write;

use serde_json::Value;

/// `s` escaped for HTML text and for attribute values in double or single quotes (`&`, `<`, `>`,
/// `"`, `'`), with control characters other than tab and newline dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `s` as one URL path segment (or query value): everything but unreserved characters
/// percent-encoded, so that a `/`, `?`, `#` or `..` in a workflow id stays inside its segment.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out == "." || out == ".." {
        return out.replace('.', "%2E");
    }
    out
}

/// A status as a CSS class suffix: lowercase letters only (anything else is `other`).
pub fn status_class(status: &str) -> &str {
    if !status.is_empty() && status.len() <= 20 && status.bytes().all(|b| b.is_ascii_lowercase()) {
        status
    } else {
        "other"
    }
}

/// A JSON value as text (strings without their quotes), for a cell.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A workflow time (ms since the epoch) as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn time(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else {
        return text(ms);
    };
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// JSON as nested `<details>` (objects and arrays collapsible, the first `open_levels` levels open),
/// every key and value escaped. Each `<details>` has a `data-path` so that a live refresh can keep
/// what the reader opened.
pub fn json_tree(v: &Value, open_levels: usize) -> String {
    let mut out = String::new();
    json_node(&mut out, v, "$", 0, open_levels);
    out
}

const JSON_MAX_ITEMS: usize = 500;

fn json_node(out: &mut String, v: &Value, path: &str, depth: usize, open_levels: usize) {
    let open = if depth < open_levels { " open" } else { "" };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let _ = write!(
                out,
                "<details class=\"json\" data-path=\"{}\"{open}><summary>{{…}} <span class=\"muted\">{} keys</span></summary><ul>",
                escape(path),
                m.len()
            );
            for (k, child) in m.iter().take(JSON_MAX_ITEMS) {
                let _ = write!(out, "<li><span class=\"key\">{}</span>: ", escape(k));
                json_node(out, child, &format!("{path}.{k}"), depth + 1, open_levels);
                out.push_str("</li>");
            }
            if m.len() > JSON_MAX_ITEMS {
                let _ = write!(
                    out,
                    "<li class=\"muted\">… {} more</li>",
                    m.len() - JSON_MAX_ITEMS
                );
            }
            out.push_str("</ul></details>");
        }
        Value::Array(a) if !a.is_empty() => {
            let _ = write!(
                out,
                "<details class=\"json\" data-path=\"{}\"{open}><summary>[…] <span class=\"muted\">{} items</span></summary><ul>",
                escape(path),
                a.len()
            );
            for (i, child) in a.iter().take(JSON_MAX_ITEMS).enumerate() {
                let _ = write!(out, "<li><span class=\"key\">{i}</span>: ");
                json_node(out, child, &format!("{path}[{i}]"), depth + 1, open_levels);
                out.push_str("</li>");
            }
            if a.len() > JSON_MAX_ITEMS {
                let _ = write!(
                    out,
                    "<li class=\"muted\">… {} more</li>",
                    a.len() - JSON_MAX_ITEMS
                );
            }
            out.push_str("</ul></details>");
        }
        Value::String(s) => {
            let _ = write!(out, "<span class=\"str\">\"{}\"</span>", escape(s));
        }
        Value::Null => out.push_str("<span class=\"null\">null</span>"),
        v => {
            let _ = write!(out, "<span class=\"lit\">{}</span>", escape(&v.to_string()));
        }
    }
}

/// A whole page: `body_attrs` are extra attributes of `<body>` (already escaped), which the script
/// reads (`data-page`, `data-events`, `data-fragment`, `data-wid`).
pub fn page(title: &str, body_attrs: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · stateful explorer</title>\
<link rel=\"stylesheet\" href=\"/static/explorer.css\">\
<script src=\"/static/explorer.js\" defer></script></head>\
<body {body_attrs}><header><a class=\"brand\" href=\"/\">stateful explorer</a>\
<span class=\"live\" data-testid=\"live-status\"></span></header><main>{main}</main></body></html>\n",
        escape(title)
    )
}

/// The stylesheet (`/static/explorer.css`).
pub const CSS: &str = r#"
:root { --fg:#1d2733; --muted:#6b7785; --bg:#f6f7f9; --card:#fff; --line:#d8dde3; --accent:#2457c5; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; gap:1rem; align-items:center; padding:.6rem 1.2rem; background:#1d2733; color:#fff; }
header a.brand { color:#fff; font-weight:600; text-decoration:none; }
header .live { margin-left:auto; font-size:12px; color:#b8c4d2; }
main { padding:1rem 1.2rem; max-width:1400px; }
a { color:var(--accent); }
h1 { font-size:1.35rem; margin:.2rem 0 .8rem; word-break:break-all; }
h2 { font-size:1.05rem; margin:1.2rem 0 .5rem; }
section, .card { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:.7rem .9rem; margin-bottom:.9rem; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:.3rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-weight:600; color:var(--muted); font-size:12px; text-transform:uppercase; }
code, .mono, .json { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12.5px; }
.muted { color:var(--muted); }
.error { background:#fdecea; border-color:#f3b7b0; color:#8a1c12; }
.grid { display:grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap:.9rem; }
.grid section { margin:0; }
form.filters { display:flex; gap:.6rem; align-items:end; flex-wrap:wrap; margin-bottom:.8rem; }
label { font-size:12px; color:var(--muted); display:flex; flex-direction:column; gap:.15rem; }
input, select, button { font: inherit; padding:.3rem .5rem; border:1px solid var(--line); border-radius:4px; background:#fff; }
button { cursor:pointer; background:#eef2f8; }
button:hover { background:#dfe7f3; }
button.danger { background:#fbeceb; }
ul.counts { list-style:none; display:flex; gap:.5rem; padding:0; margin:0 0 .8rem; flex-wrap:wrap; }
ul.counts li { padding:.2rem .6rem; border-radius:12px; border:1px solid var(--line); background:#fff; }
.badge { display:inline-block; padding:0 .45rem; border-radius:10px; font-size:12px; border:1px solid rgba(0,0,0,.12); }
.st-running { background:#d5f0dc; } .st-paused { background:#fff1c2; } .st-unauthorized { background:#fbd3cf; }
.st-completed { background:#dde3ea; } .st-cancelled { background:#e9dcf3; } .st-unreachable { background:#f2b8b5; }
.st-failed { background:#f7c6c1; } .st-conflicting { background:#ffd8a8; } .st-removed { background:#eceff2; } .st-other { background:#eee; }
svg .n rect { stroke:#54606e; stroke-width:1; rx:5; }
svg .n.st-running rect { fill:#d5f0dc; } svg .n.st-paused rect { fill:#fff1c2; } svg .n.st-unauthorized rect { fill:#fbd3cf; }
svg .n.st-completed rect { fill:#dde3ea; } svg .n.st-cancelled rect { fill:#e9dcf3; } svg .n.st-unreachable rect { fill:#f2b8b5; }
svg .n.st-other rect { fill:#eee; }
svg .n.root rect { stroke-width:2.5; }
svg .n.marked rect { stroke:#c0392b; stroke-width:2; stroke-dasharray:4 2; }
svg .n text { font: 11px system-ui, sans-serif; fill:#1d2733; }
svg .n text.sub { fill:#4b5766; font-size:10px; }
svg .e { stroke:#8793a1; stroke-width:1; stroke-opacity:.6; fill:none; }
svg .e.sub { stroke:#2457c5; stroke-dasharray:5 4; }
svg .dim { opacity:.15; }
svg .match rect { stroke:#2457c5; stroke-width:3; }
.hidden { display:none !important; }
.graph { overflow:auto; max-height:70vh; background:#fff; border:1px solid var(--line); border-radius:6px; }
.toolbar { display:flex; gap:.8rem; align-items:end; flex-wrap:wrap; margin-bottom:.6rem; }
ul.outline, ul.outline ul { list-style:none; padding-left:1.1rem; margin:0; }
ul.outline { padding-left:0; }
ul.outline li { padding:.1rem 0; }
ul.outline li.dim { display:none; }
.mark { color:#8a1c12; font-size:12px; }
.actions { display:flex; gap:.5rem; flex-wrap:wrap; align-items:center; }
.actions form { display:flex; gap:.4rem; align-items:center; }
.progress { margin-top:.5rem; font-size:13px; white-space:pre-wrap; }
.timeline { list-style:none; padding:0; margin:0; border-left:2px solid var(--line); }
.timeline li { margin:0 0 .5rem .8rem; }
.json ul { list-style:none; margin:0; padding-left:1.1rem; }
.json summary { cursor:pointer; }
.json .key { color:#7a3e9d; } .json .str { color:#1c6e3a; } .json .lit { color:#2457c5; } .json .null { color:var(--muted); }
dl.kv { display:grid; grid-template-columns: max-content 1fr; gap:.2rem .8rem; margin:0; }
dl.kv dt { color:var(--muted); } dl.kv dd { margin:0; word-break:break-all; }
"#;

/// The script (`/static/explorer.js`): live updates (server-sent events, then the page's fragment
/// fetched and swapped in), the tree's search and level collapse, and the actions (confirmed, then
/// polled until done). It reads everything it needs from `data-` attributes: no workflow data is
/// ever written into a script.
pub const JS: &str = r#"
(function () {
  'use strict';
  var body = document.body;
  var live = document.querySelector('[data-testid="live-status"]');
  function setLive(t) { if (live) live.textContent = t; }

  // Tree: search by id and collapse levels (re-applied after each live refresh).
  function applyFilters() {
    var s = document.querySelector('[data-testid="search"]');
    var q = s ? s.value.trim().toLowerCase() : '';
    var d = document.querySelector('[data-testid="depth"]');
    var max = d && d.value !== '' ? parseInt(d.value, 10) : Infinity;
    document.querySelectorAll('[data-search]').forEach(function (el) {
      var depth = parseInt(el.getAttribute('data-depth') || '0', 10);
      var hit = q === '' || el.getAttribute('data-search').indexOf(q) >= 0;
      el.classList.toggle('dim', !hit);
      el.classList.toggle('match', q !== '' && hit);
      el.setAttribute('data-match', hit ? '1' : '0');
      el.classList.toggle('hidden', depth > max);
    });
    document.querySelectorAll('[data-edge-depth]').forEach(function (el) {
      el.classList.toggle('hidden', parseInt(el.getAttribute('data-edge-depth'), 10) > max);
    });
    var n = document.querySelector('[data-testid="search-count"]');
    if (n) {
      var hits = document.querySelectorAll('[data-testid="node"][data-match="1"]').length;
      n.textContent = q === '' ? '' : hits + ' matching';
    }
  }
  document.addEventListener('input', function (e) {
    if (e.target.matches('[data-testid="search"]')) applyFilters();
  });
  document.addEventListener('change', function (e) {
    if (e.target.matches('[data-testid="depth"]')) applyFilters();
  });

  // Live updates: an event says something changed; the fragment is fetched and swapped in.
  function openPaths(root) {
    var open = {};
    root.querySelectorAll('details[data-path]').forEach(function (d) { open[d.getAttribute('data-path')] = d.open; });
    return open;
  }
  var fetching = false, again = false;
  function refresh() {
    var url = body.getAttribute('data-fragment');
    var target = document.getElementById('live');
    if (!url || !target) return;
    if (fetching) { again = true; return; }
    fetching = true;
    fetch(url, { headers: { 'X-Explorer': '1' }, credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.text(); })
      .then(function (html) {
        var open = openPaths(target);
        var depth = target.querySelector('[data-testid="depth"]');
        var depthValue = depth ? depth.value : '';
        target.innerHTML = html;
        depth = target.querySelector('[data-testid="depth"]');
        if (depth && depthValue !== '') {
          if (!depth.querySelector('option[value="' + depthValue + '"]')) {
            var o = document.createElement('option');
            o.value = depthValue; o.textContent = '0–' + depthValue;
            depth.appendChild(o);
          }
          depth.value = depthValue;
        }
        target.querySelectorAll('details[data-path]').forEach(function (d) {
          var p = d.getAttribute('data-path');
          if (Object.prototype.hasOwnProperty.call(open, p)) d.open = open[p];
        });
        applyFilters();
        setLive('updated ' + new Date().toLocaleTimeString());
      })
      .catch(function (e) { setLive('refresh failed: ' + e.message); })
      .finally(function () { fetching = false; if (again) { again = false; refresh(); } });
  }
  // One stream per visible tab: closed while the tab is hidden (browsers allow few connections per
  // host), reopened with a refresh when it shows again. A stream the server refused (401, 503) is
  // closed by the browser for good: it is reopened here after 10 s. Each `ready` after the first
  // (a reconnect, or the server's rollover) refreshes, so that no change in between is missed.
  var events = body.getAttribute('data-events');
  var es = null, readies = 0, retry = null;
  function closeStream() {
    if (retry) { clearTimeout(retry); retry = null; }
    if (es) { es.close(); es = null; }
  }
  function openStream() {
    closeStream();
    var s = new EventSource(events);
    es = s;
    s.addEventListener('open', function () { setLive('live'); });
    s.addEventListener('ready', function () {
      readies += 1;
      setLive('live');
      if (readies > 1) refresh();
    });
    s.addEventListener('changed', refresh);
    s.addEventListener('error', function () {
      if (es !== s) return;
      if (s.readyState === 2) {
        setLive('live updates off; retrying');
        s.close();
        es = null;
        if (!retry) retry = setTimeout(function () { retry = null; if (!document.hidden) openStream(); }, 10000);
      } else {
        setLive('live updates reconnecting…');
      }
    });
  }
  if (events && window.EventSource) {
    if (!document.hidden) openStream();
    document.addEventListener('visibilitychange', function () {
      if (document.hidden) {
        closeStream();
        setLive('live updates paused (tab hidden)');
      } else if (!es) {
        readies = 0;
        openStream();
        refresh();
      }
    });
  }

  // Actions: confirm, POST (JSON and the X-Explorer header), then poll the job until it is done.
  function progress(t, cls) {
    var p = document.querySelector('[data-testid="action-progress"]');
    if (p) { p.textContent = t; p.className = 'progress ' + (cls || ''); }
  }
  function poll(id) {
    fetch('/api/jobs/' + encodeURIComponent(id), { headers: { 'X-Explorer': '1' }, credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { return r.json(); })
      .then(function (j) {
        progress(j.action + ': ' + j.state + ' — ' + j.progress, j.state);
        if (j.state === 'running') setTimeout(function () { poll(id); }, 500);
        else refresh();
      })
      .catch(function (e) { progress('lost track of the action: ' + e.message, 'failed'); });
  }
  function act(action, payload, what) {
    var wid = body.getAttribute('data-wid');
    if (!window.confirm(what + '?')) { progress(action + ': not confirmed'); return; }
    progress(action + ': sending…', 'running');
    fetch('/api/action/' + encodeURIComponent(wid) + '/' + action, {
      method: 'POST', credentials: 'same-origin', cache: 'no-store',
      headers: { 'Content-Type': 'application/json', 'X-Explorer': '1' },
      body: JSON.stringify(payload || {})
    })
      .then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
      .then(function (a) {
        if (!a[0]) { progress(action + ': failed — ' + (a[1].error || 'error'), 'failed'); return; }
        progress(action + ': ' + a[1].state + ' — ' + a[1].progress, a[1].state);
        if (a[1].state === 'running') poll(a[1].job);
      })
      .catch(function (e) { progress(action + ': failed — ' + e.message, 'failed'); });
  }
  document.addEventListener('click', function (e) {
    var b = e.target.closest('button[data-action]');
    if (!b || b.type === 'submit') return;
    e.preventDefault();
    var tree = document.querySelector('[data-testid="validate-tree"]');
    var payload = b.getAttribute('data-action') === 'validate' ? { tree: !!(tree && tree.checked) } : {};
    act(b.getAttribute('data-action'), payload, b.getAttribute('data-confirm') || b.getAttribute('data-action'));
  });
  document.addEventListener('submit', function (e) {
    if (!e.target.matches('form[data-testid="rotate-form"]')) return;
    e.preventDefault();
    var input = e.target.querySelector('[data-testid="rotate-token-input"]');
    var token = input.value;
    input.value = '';
    if (token.trim() === '') { progress('rotate: paste the new token first', 'failed'); return; }
    act('rotate', { token: token }, 'Rotate the API token of the whole tree under ' + body.getAttribute('data-wid'));
  });

  applyFilters();
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escape_neutralizes_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x')</script>&\"\u{0}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("User-u1"), "User-u1");
        assert_eq!(enc("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(enc(".."), "%2E%2E");
        assert_eq!(enc("é"), "%C3%A9");
    }

    #[test]
    fn json_tree_escapes_keys_and_values() {
        let h = json_tree(
            &json!({"<b>": ["<img src=x onerror=alert(1)>", 1, null]}),
            2,
        );
        assert!(!h.contains("<b>"));
        assert!(!h.contains("<img"));
        assert!(h.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(h.contains("<details"));
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(time(&json!(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            time(&json!(1_700_000_000_000u64)),
            "2023-11-14 22:13:20 UTC"
        );
    }

    #[test]
    fn unknown_statuses_get_a_neutral_class() {
        assert_eq!(status_class("paused"), "paused");
        assert_eq!(status_class("x\" onload=\"y"), "other");
    }
}
