// Keys of the signed-in user: create (groups picked in order), the secret
// shown once with a copy button (kept in the DOM only until dismissed,
// never stored), edit limits, revoke.

import { h, $, fill, api, errorText, usd, copy } from "./lib.js";

const state = { session: null, order: [], keys: [] };

function renderGroups() {
  fill($("group-choices"), state.session.groups.map((g) =>
    h("button", {
      type: "button", class: "chip" + (state.order.includes(g) ? " on" : ""), "data-group": g,
      onclick: () => {
        state.order = state.order.includes(g) ? state.order.filter((x) => x !== g) : [...state.order, g];
        renderGroups();
      },
    }, g)));
  fill($("group-order"), state.order.length
    ? state.order.map((g) => h("li", {}, g))
    : [h("li", { class: "muted" }, `your default group (${state.session.default_group})`)]);
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

async function create(event) {
  event.preventDefault();
  const body = { name: $("key-name").value.trim() };
  if (state.order.length) body.groups = state.order;
  const budget = numberOrNull("key-budget");
  if (budget !== undefined) body.budget_usd = budget;
  if ($("key-period").value) body.budget_period = $("key-period").value;
  const rpm = numberOrNull("key-rpm");
  if (rpm !== undefined) body.rpm = rpm;
  if ($("key-expires").value) body.expires = $("key-expires").value + "T00:00:00Z";
  const models = $("key-models").value.split(",").map((m) => m.trim()).filter(Boolean);
  if (models.length) body.models = models;
  const r = await api("POST", "/api/keys", body);
  if (r.status !== 201) {
    $("create-error").textContent = errorText(r);
    return;
  }
  $("create-error").textContent = "";
  $("create-key").reset();
  showSecret(r.data);
  await loadKeys();
}

/** The new key's secret, once: copy it now, it cannot be shown again. */
function showSecret(key) {
  const secret = h("code", { class: "secret", id: "secret-value" }, key.key);
  const box = h("div", { class: "notice", id: "secret-box" },
    h("p", {}, h("strong", {}, `Key “${key.name}” created. `),
      "Copy its secret now: it is shown only once."),
    h("div", { class: "row" }, secret,
      h("button", { type: "button", id: "secret-copy", onclick: (e) => copy(key.key, secret, e.currentTarget) }, "Copy"),
      h("button", { type: "button", class: "secondary", id: "secret-dismiss", onclick: () => fill($("new-secret")) }, "Done")));
  fill($("new-secret"), box);
}

function limitsText(k) {
  const parts = [];
  if (k.rpm) parts.push(`${k.rpm} rpm`);
  if (k.tpm) parts.push(`${k.tpm} tpm`);
  if (k.max_concurrent) parts.push(`${k.max_concurrent} concurrent`);
  return parts.join(", ") || "—";
}

function budgetText(k) {
  if (k.budget_usd === null || k.budget_usd === undefined) return "—";
  return usd(k.budget_usd) + (k.budget_period ? ` per ${k.budget_period}` : "");
}

/** The edit form of one key's limits, in place of its row. */
function editRow(k) {
  const input = (name, value, attrs = {}) => h("input", { name, value: value ?? "", type: "number", min: 0, step: "any", ...attrs });
  const form = h("form", { class: "fields", "data-edit": k.name },
    h("label", {}, "Budget (USD)", input("budget_usd", k.budget_usd)),
    h("label", {}, "Budget period", h("select", { name: "budget_period" },
      ["", "day", "week", "month"].map((p) => h("option", { value: p, selected: (k.budget_period || "") === p }, p || "lifetime")))),
    h("label", {}, "Requests / min", input("rpm", k.rpm, { step: 1 })),
    h("label", {}, "Tokens / min", input("tpm", k.tpm, { step: 1 })),
    h("label", {}, "Max concurrent", input("max_concurrent", k.max_concurrent, { step: 1 })),
    h("label", {}, "Disabled", h("select", { name: "disabled" },
      h("option", { value: "false", selected: !k.disabled }, "no"), h("option", { value: "true", selected: !!k.disabled }, "yes"))),
    h("div", { class: "row" },
      h("button", { type: "submit" }, "Save"),
      h("button", { type: "button", class: "secondary", onclick: () => renderKeys() }, "Cancel"),
      h("span", { class: "error" })));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const num = (n) => (f.get(n) === "" ? null : Number(f.get(n)));
    const body = {
      budget_usd: num("budget_usd"), budget_period: f.get("budget_period") || null,
      rpm: num("rpm"), tpm: num("tpm"), max_concurrent: num("max_concurrent"),
      disabled: f.get("disabled") === "true",
    };
    const r = await api("PATCH", `/api/keys/${encodeURIComponent(k.name)}`, body);
    if (r.status === 200) await loadKeys();
    else form.querySelector(".error").textContent = errorText(r);
  });
  return h("tr", {}, h("td", { colspan: 9 }, h("strong", {}, k.name), form));
}

// Groups the key no longer routes (gone from the config, or no longer the
// user's to pick) stay on it and are marked.
function groupsText(k) {
  const inactive = k.inactive_groups || [];
  return (k.groups || []).map((g) => inactive.includes(g) ? `${g} (inactive)` : g).join(" → ");
}

function renderKeys(editing) {
  const rows = state.keys.map((k) => {
    if (k.name === editing) return editRow(k);
    const actions = k.managed
      ? h("td", {},
          h("button", { type: "button", class: "secondary", "data-action": "edit", onclick: () => renderKeys(k.name) }, "Edit"), " ",
          h("button", { type: "button", class: "danger", "data-action": "revoke", onclick: (e) => revoke(k, e.currentTarget) }, "Revoke"))
      : h("td", { class: "muted" }, "from the config file");
    return h("tr", { "data-key": k.name },
      h("td", {}, k.name), h("td", {}, k.hint ? "…" + k.hint : "—"), h("td", {}, groupsText(k)),
      h("td", { class: "num" }, usd(k.spent_usd)), h("td", { class: "num" }, budgetText(k)),
      h("td", { class: "num" }, usd(k.budget_left_usd)), h("td", {}, limitsText(k)),
      h("td", {}, k.disabled ? "disabled" : k.expires ? `until ${k.expires}` : "active"), actions);
  });
  fill($("keys-table"), rows.length
    ? h("table", {}, h("thead", {}, h("tr", {}, ["name", "key", "groups", "spent", "budget", "left", "limits", "state", ""]
        .map((t, i) => h("th", { class: [3, 4, 5].includes(i) ? "num" : null }, t)))), h("tbody", {}, rows))
    : h("p", { class: "muted" }, "No key yet."));
}

/** Revoke asks once more on the same button, then deletes. */
async function revoke(k, button) {
  if (button.dataset.confirm !== "1") {
    button.dataset.confirm = "1";
    button.textContent = "Really revoke?";
    return;
  }
  const r = await api("DELETE", `/api/keys/${encodeURIComponent(k.name)}`);
  if (r.status !== 204) button.textContent = errorText(r);
  else await loadKeys();
}

export async function loadKeys() {
  const r = await api("GET", "/api/keys");
  state.keys = r.status === 200 ? (r.data.data || r.data.keys || r.data) : [];
  if (!Array.isArray(state.keys)) state.keys = [];
  renderKeys();
  const select = $("usage-key");
  const current = select.value;
  fill(select, h("option", { value: "" }, "all keys"), state.keys.map((k) => h("option", { value: k.name }, k.name)));
  select.value = current;
}

let bound = false;
export function initKeys(session) {
  state.session = session;
  state.order = [];
  renderGroups();
  fill($("new-secret"));
  if (!bound) {
    $("create-key").addEventListener("submit", create);
    bound = true;
  }
}
