// The user console on the client listener: the public pricing page, sign-in
// with a user token (exchanged for an HttpOnly session cookie: the token is
// never stored by this page), and the "first request" snippets. Keys and
// usage are in keys.js and usage.js.

import { h, $, fill, api, errorText, price, show, copy, onSignedOut } from "./lib.js";
import { initKeys, loadKeys } from "./keys.js";
import { initUsage, loadUsage } from "./usage.js";

const state = { session: null, pricing: null, view: "pricing" };

function effective(base, ratio) {
  return base === null || base === undefined ? null : Number(base) * Number(ratio);
}

/** Each group with its ratio, badges and models at base and effective prices. */
function renderPricing() {
  const p = state.pricing;
  if (!p) return;
  const query = $("model-search").value.trim().toLowerCase();
  const byName = new Map();
  for (const m of p.models) {
    byName.set(m.name, m);
    for (const a of m.aliases || []) byName.set(a, m);
  }
  const cards = p.groups.map((g) => {
    const models = g.models.filter((name) => name.toLowerCase().includes(query));
    const rows = models.map((name) => {
      const m = byName.get(name) || {};
      const cell = (kind) => h("td", { class: "num" },
        h("span", { class: "muted" }, price(m[kind])), " → ", h("strong", {}, price(effective(m[kind], g.ratio))));
      return h("tr", { "data-model": name }, h("td", {}, name), cell("input"), cell("output"), cell("cached_input"), cell("cache_write"));
    });
    const body = rows.length
      ? h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, "model"),
            ["input", "output", "cached input", "cache write"].map((t) => h("th", { class: "num" }, `${t} (base → effective)`)))),
          h("tbody", {}, rows))
      : h("p", { class: "muted" }, query ? "No model matches." : "No model.");
    return h("div", { class: "card group", "data-group": g.name, hidden: Boolean(query) && !rows.length },
      h("div", { class: "group-head" },
        h("h2", {}, g.name),
        h("span", { class: "ratio" }, `ratio ×${g.ratio}`),
        g.connectivity ? h("span", { class: "badge " + g.connectivity }, g.connectivity) : null,
        g.selectable ? h("span", { class: "badge selectable" }, "selectable") : null,
        h("span", { class: "muted" }, g.description || "")),
      body);
  });
  fill($("groups"), cards);
}

const SNIPPETS = {
  curl: (base, model) => `curl ${base}/v1/chat/completions \\
  -H "Authorization: Bearer $TOLLGATE_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello"}]}'`,
  "Python openai": (base, model) => `import os
from openai import OpenAI

client = OpenAI(base_url="${base}/v1", api_key=os.environ["TOLLGATE_API_KEY"])
reply = client.chat.completions.create(
    model="${model}",
    messages=[{"role": "user", "content": "Hello"}],
)
print(reply.choices[0].message.content)`,
  "Python anthropic": (base, model) => `import os
from anthropic import Anthropic

client = Anthropic(base_url="${base}", api_key=os.environ["TOLLGATE_API_KEY"])
reply = client.messages.create(
    model="${model}",
    max_tokens=1024,
    messages=[{"role": "user", "content": "Hello"}],
)
print(reply.content[0].text)`,
  "Claude Code": (base, model) => `export ANTHROPIC_BASE_URL=${base}   # no /v1
export ANTHROPIC_AUTH_TOKEN=$TOLLGATE_API_KEY
export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
claude --model ${model}`,
  "Codex CLI": (base, model) => `# ~/.codex/config.toml
model_provider = "tollgate"
model = "${model}"

[model_providers.tollgate]
name = "tollgate"
base_url = "${base}/v1"
wire_api = "responses"
env_key = "TOLLGATE_API_KEY"

# then, in a shell with TOLLGATE_API_KEY set:
#   codex`,
  "Gemini CLI": (base, model) => `export GOOGLE_GEMINI_BASE_URL=${base}   # no /v1beta
export GEMINI_API_KEY=$TOLLGATE_API_KEY
# ~/.gemini/settings.json: {"security": {"auth": {"selectedType": "gemini-api-key"}}}
gemini -m ${model}`,
};

function renderSnippet() {
  const base = location.origin;
  const model = $("start-model").value || "MODEL";
  const name = document.querySelector("#snippet-tabs button.active")?.dataset.name || "curl";
  $("snippet").textContent = SNIPPETS[name](base, model);
}

function initStart() {
  $("base-url").textContent = location.origin;
  fill($("snippet-tabs"), Object.keys(SNIPPETS).map((name, i) =>
    h("button", { type: "button", "data-name": name, class: i === 0 ? "active" : null, onclick: (e) => {
      for (const b of $("snippet-tabs").children) b.classList.toggle("active", b === e.currentTarget);
      renderSnippet();
    } }, name)));
  $("start-model").addEventListener("change", renderSnippet);
  $("snippet-copy").addEventListener("click", (e) => copy($("snippet").textContent, $("snippet"), e.currentTarget));
}

function fillModels() {
  const names = [...new Set(state.pricing.groups.flatMap((g) => g.models))].sort();
  const select = $("start-model");
  fill(select, names.map((n) => h("option", {}, n)));
  renderSnippet();
}

/** Shows the signed-in or the public state of the header and nav. */
function setSession(session) {
  state.session = session;
  const signedIn = !!session;
  $("signin").hidden = signedIn;
  $("who").hidden = !signedIn;
  $("signout").hidden = !signedIn;
  $("nav-keys").hidden = !signedIn;
  $("nav-usage").hidden = !signedIn;
  $("who").textContent = signedIn ? `Signed in as ${session.user}` : "";
  if (signedIn) {
    initKeys(session, state.pricing);
    go("keys");
  } else {
    go("pricing");
  }
}

function go(view) {
  if (!state.session && (view === "keys" || view === "usage")) view = "pricing";
  state.view = view;
  show(view);
  if (view === "keys") loadKeys();
  if (view === "usage") loadUsage();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("signin-token");
  const err = $("signin-error");
  err.hidden = true;
  const r = await api("POST", "/api/session", { token: input.value });
  input.value = "";
  if (r.status !== 200) {
    err.textContent = `Sign-in failed: ${errorText(r)}`;
    err.hidden = false;
    return;
  }
  const s = await api("GET", "/api/session");
  if (s.status === 200) setSession(s.data);
}

async function signOut() {
  await api("DELETE", "/api/session");
  setSession(null);
}

async function main() {
  onSignedOut(() => state.session && setSession(null));
  for (const b of document.querySelectorAll("header nav button")) {
    b.addEventListener("click", () => go(b.dataset.view));
  }
  $("signin").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("model-search").addEventListener("input", renderPricing);
  initStart();
  initUsage();
  const [pricing, session] = await Promise.all([api("GET", "/api/pricing"), api("GET", "/api/session")]);
  state.pricing = pricing.data;
  renderPricing();
  fillModels();
  setSession(session.status === 200 ? session.data : null);
  document.body.dataset.ready = "1";
}

main();
