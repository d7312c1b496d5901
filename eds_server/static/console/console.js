// The console: keeps the view current, and turns the operator's actions into API calls.

import { ApiError, WAIT_SECONDS, api, token } from "./api.js";
import { endpointOf, h, renderServices, renderSummary, structure, tick } from "./view.js";

const REFRESH_SECONDS = 3;
const $ = (id) => document.getElementById(id);

const state = {
  writes: 0, // writes made from the page: only the latest one's propagation is told
  services: [],
  clients: null,
  clientsProblem: "Loading the Envoys polling this server…",
  fetchedAt: Date.now(),
  shape: null, // structure() of what is on screen
  paused: false,
  timer: 0,
  generation: 0,
  refreshError: null,
};

// ---- messages: one polite status line, one alert for refusals ----

function say(text) {
  $("status").textContent = text;
}

function clearAlert() {
  $("alert").replaceChildren();
  for (const field of document.querySelectorAll("[aria-invalid]")) {
    field.removeAttribute("aria-invalid");
    field.removeAttribute("aria-errormessage");
  }
}

function showError(error, what) {
  const lines = [h("p", {}, h("strong", {}, `${what}. `), error.status ? `The server answered ${error.status}: ` : "", error.message)];
  if (error.status === 401 || error.status === 403)
    lines.push(h("p", {}, "This server wants a bearer token: enter it under “Access token”, then try again."));
  $("alert").replaceChildren(
    h("div", { class: "alert-text" }, lines),
    h("button", { type: "button", class: "small", dataset: { action: "dismiss" } }, "Dismiss"),
  );
}

/** A change that was applied but did not reach every Envoy: the server's own sentence, naming them. */
function showNotReached(propagation) {
  const title = propagation.outcome === "rejected" ? "An Envoy rejected the change. " : "The change has not reached every Envoy. ";
  $("alert").replaceChildren(
    h("div", { class: "alert-text" }, h("p", {}, h("strong", {}, title), `It was applied, but ${propagation.message}.`)),
    h("button", { type: "button", class: "small", dataset: { action: "dismiss" } }, "Dismiss"),
  );
}

/** After a write from the page: say what it did, then whether it has reached every Envoy polling the service. */
async function sayAndFollow(text, name, version) {
  const write = ++state.writes;
  say(`${text} Waiting up to ${WAIT_SECONDS} s for every Envoy polling ${name} to have it…`);
  let propagation;
  try {
    propagation = (await api.propagation(name, version)).data;
  } catch (error) {
    if (write !== state.writes) return;
    // 404: the service is gone and no Envoy asks for it.
    return say(error.status === 404 ? `${text} No Envoy polls ${name}.` : `${text} Whether every Envoy has it is not known: ${error.message}`);
  }
  if (write !== state.writes) return; // a later write from the page has its own to tell
  const { outcome, subscribed } = propagation;
  if (outcome !== "in_sync") {
    showNotReached(propagation);
    return say(`${text} It has not reached every Envoy polling ${name}: see the message.`);
  }
  if (!subscribed) return say(`${text} No Envoy polls ${name}.`);
  say(`${text} It has reached ${subscribed === 1 ? "the one Envoy" : `all ${subscribed} Envoys`} polling ${name}.`);
}

function clientsProblem(error) {
  if (error.status === 404) return "This server has no clients view (GET /clients answered 404), so its Envoys cannot be shown.";
  return `The Envoys cannot be shown: GET /clients failed (${error.status ? `${error.status}: ` : ""}${error.message}).`;
}

// ---- refreshing ----

function schedule() {
  clearTimeout(state.timer);
  if (!state.paused) state.timer = setTimeout(refresh, REFRESH_SECONDS * 1000);
}

function clock(date = new Date()) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function showUpdated() {
  const when = state.refreshError ? `Could not refresh at ${clock()}` : `Updated ${clock(new Date(state.fetchedAt))}`;
  $("updated").textContent = `${when} · ${state.paused ? "updates paused" : `every ${REFRESH_SECONDS} s`}`;
}

async function refresh() {
  const generation = ++state.generation;
  clearTimeout(state.timer);
  const [services, clients] = await Promise.allSettled([api.services(), api.clients()]);
  if (generation !== state.generation) return; // a newer refresh has started; it draws
  if (services.status === "fulfilled") {
    state.services = services.value.data;
    state.clients = clients.status === "fulfilled" ? clients.value.data.clients : null;
    state.clientsProblem = clients.status === "fulfilled" ? null : clientsProblem(clients.reason);
    state.fetchedAt = Date.now();
    if (state.refreshError) clearAlert();
    state.refreshError = null;
    draw();
  } else {
    const error = services.reason;
    // Said once, not every few seconds while the server stays away.
    if (state.refreshError?.message !== error.message) showError(error, "Could not read the registry");
    state.refreshError = error;
    if (state.shape === null) {
      // Nothing shown yet: say so where the services would be, rather than "Loading" forever.
      const list = $("service-list");
      list.replaceChildren(h("p", { class: "empty" }, "The registry could not be read: see the message above."));
      list.removeAttribute("aria-busy");
    }
  }
  showUpdated();
  schedule();
}

function draw() {
  $("summary").replaceChildren(renderSummary(state));
  const list = $("service-list");
  const fresh = h("div", {}, renderServices(state));
  const shape = structure(state);
  if (shape === state.shape) {
    // Nothing but countdowns and poll times moved: swap those alone, so that focus,
    // selection and a screen reader's place in the page stay where they are.
    for (const element of fresh.querySelectorAll("[data-live]")) {
      list.querySelector(`[data-live="${CSS.escape(element.dataset.live)}"]`)?.replaceWith(element);
    }
  } else {
    const focused = list.contains(document.activeElement) ? document.activeElement : null;
    const focusedService = focused?.closest("[data-service-name]")?.dataset.serviceName;
    list.replaceChildren(...fresh.childNodes);
    state.shape = shape;
    if (focused) restoreFocus(focused.dataset.key, focusedService);
  }
  list.removeAttribute("aria-busy");
  tick(list);
  const names = $("service-names");
  if ([...names.options].map((option) => option.value).join("\n") !== state.services.map((s) => s.name).join("\n"))
    names.replaceChildren(...state.services.map((service) => h("option", { value: service.name })));
}

/** Focus what the operator was on before a redraw, or the nearest thing still there. */
function restoreFocus(key, serviceName) {
  const same = key && document.querySelector(`#service-list [data-key="${CSS.escape(key)}"]`);
  const heading = serviceName && document.querySelector(`#service-list [data-service-name="${CSS.escape(serviceName)}"] h3`);
  (same || heading || $("services-title")).focus();
}

// ---- actions on hosts and services ----

function confirmed({ title, text, confirm }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = confirm;
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-cancel").focus(); // the safe choice is the default one
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true }));
}

function envoysOf(name) {
  const count = state.clients?.filter((client) => client.resource_name === name).length ?? 0;
  return count ? ` ${count === 1 ? "1 Envoy polls" : `${count} Envoys poll`} it now.` : "";
}

// Each action answers what to say and the version it wrote (none: the current one), or null when cancelled.
const ACTIONS = {
  async drain({ service, endpoint }) {
    const { data } = await api.patchHost(service, endpoint, { health_status: "DRAINING" });
    return { text: `${endpoint} in ${service} is draining: Envoys send it no new requests.`, version: data.version };
  },
  async undrain({ service, endpoint }) {
    const { data } = await api.patchHost(service, endpoint, { health_status: "HEALTHY" });
    return { text: `${endpoint} in ${service} is healthy again.`, version: data.version };
  },
  async "remove-host"({ service, endpoint }) {
    const ok = await confirmed({
      title: `Remove ${endpoint} from ${service}?`,
      text: `Envoys stop sending it traffic on their next poll.${envoysOf(service)}`,
      confirm: "Remove host",
    });
    if (!ok) return null;
    await api.removeHost(service, endpoint);
    return { text: `Removed ${endpoint} from ${service}.` };
  },
  async "delete-service"({ service }) {
    const hosts = state.services.find((s) => s.name === service)?.hosts.length ?? 0;
    const ok = await confirmed({
      title: `Delete the service ${service}?`,
      text: `Its ${hosts === 1 ? "host goes" : `${hosts} hosts go`} with it, and Envoys polling it are told it has no endpoints.${envoysOf(service)}`,
      confirm: "Delete service",
    });
    if (!ok) return null;
    await api.deleteService(service);
    return { text: `Deleted the service ${service}.` };
  },
};

const WHAT = {
  drain: ({ service, endpoint }) => `Draining ${endpoint} in ${service} was refused`,
  undrain: ({ service, endpoint }) => `Undraining ${endpoint} in ${service} was refused`,
  "remove-host": ({ service, endpoint }) => `Removing ${endpoint} from ${service} was refused`,
  "delete-service": ({ service }) => `Deleting ${service} was refused`,
};

const busy = new Set();

async function act(button) {
  const { action, key } = button.dataset;
  if (action === "dismiss") return clearAlert();
  if (action === "add-here") {
    const form = $("add-host-form");
    form.elements.name.value = button.dataset.service;
    form.scrollIntoView({ block: "start" });
    return form.elements.ip_address.focus();
  }
  if (!ACTIONS[action] || busy.has(key)) return;
  busy.add(key);
  button.setAttribute("aria-disabled", "true");
  let cancelled = false;
  try {
    const done = await ACTIONS[action](button.dataset);
    cancelled = done === null;
    if (!cancelled) {
      clearAlert();
      sayAndFollow(done.text, button.dataset.service, done.version);
    }
  } catch (error) {
    showError(error, WHAT[action](button.dataset));
  } finally {
    busy.delete(key);
    button.removeAttribute("aria-disabled");
  }
  if (!cancelled) await refresh(); // after a refusal too: someone else may have changed the service
  // A redraw while the confirmation was open may have replaced the button it returns focus to.
  if (document.activeElement === document.body || !document.activeElement) restoreFocus(key, button.dataset.service);
}

// ---- the add-host form: every field goes to the API as typed, and the API judges it ----

// Numbers are sent as numbers; anything else as the text typed, for the API to name what is wrong.
function typed(text) {
  return /^-?(\d+|\d*\.\d+)$/.test(text) ? Number(text) : text;
}

// Only the fields filled in are sent: a new host gets the API's defaults for the others,
// and a host already registered keeps its own (a POST changes only the fields it names).
function hostBody(form) {
  const value = (name) => form.elements[name].value.trim();
  const body = {};
  const tags = {};
  for (const name of ["ip_address", "hostname", "health_status"]) if (value(name)) body[name] = value(name);
  for (const name of ["port", "priority", "ttl"]) if (value(name)) body[name] = typed(value(name));
  for (const name of ["region", "az", "sub_zone"]) if (value(name)) tags[name] = value(name);
  if (value("load_balancing_weight")) tags.load_balancing_weight = typed(value("load_balancing_weight"));
  if (value("canary")) tags.canary = value("canary") === "true";
  if (Object.keys(tags).length) body.tags = tags;
  return body;
}

/** Mark the fields the API named (`body.tags.load_balancing_weight` -> the weight field). */
function markFields(form, problems) {
  const fields = problems
    .map((problem) => form.elements[problem.field === "name" ? "name" : String(problem.field).split(".").pop()])
    .filter((field) => field instanceof HTMLElement);
  for (const field of fields) {
    field.setAttribute("aria-invalid", "true");
    field.setAttribute("aria-errormessage", "alert");
  }
  return fields[0];
}

async function addHost(event) {
  event.preventDefault();
  const form = event.target;
  clearAlert();
  const name = form.elements.name.value.trim();
  if (!name) {
    showError(new ApiError(0, "enter the name of the service to add the host to (a new name creates the service)."), "No service");
    return markFields(form, [{ field: "name" }]).focus();
  }
  const body = hostBody(form);
  const endpoint = body.ip_address && body.port ? endpointOf(body) : "the host";
  try {
    const { status, data } = await api.addHost(name, body);
    const text = status === 201 ? `Added ${endpoint} to ${name}.` : `Updated ${endpoint} in ${name}: it was registered already.`;
    sayAndFollow(text, name, data.version);
    for (const field of ["ip_address", "port", "hostname"]) form.elements[field].value = "";
    form.elements.ip_address.focus();
  } catch (error) {
    showError(error, `Adding ${endpoint} to ${name} was refused`);
    markFields(form, error.problems)?.focus();
    return;
  }
  await refresh();
}

// ---- the bearer token ----

function showToken() {
  const set = Boolean(token.get());
  $("token-state").textContent = set
    ? "A token is set for this tab and sent with every call. Closing the tab forgets it."
    : "No token set. Writes work without one only while the server has no tokens configured.";
  $("token-forget").hidden = !set;
}

function useToken(event) {
  event.preventDefault();
  const field = event.target.elements.token;
  const value = field.value.trim();
  if (!value) return field.focus();
  token.set(value);
  field.value = "";
  showToken();
  clearAlert();
  say("Token set for this tab.");
  refresh();
}

function forgetToken() {
  token.clear();
  showToken();
  say("Token forgotten.");
  $("token").focus();
}

// ---- wiring ----

function togglePause(event) {
  state.paused = !state.paused;
  event.currentTarget.setAttribute("aria-pressed", String(state.paused));
  if (state.paused) clearTimeout(state.timer);
  else refresh();
  showUpdated();
}

$("add-host-form").addEventListener("submit", addHost);
$("token-form").addEventListener("submit", useToken);
$("token-forget").addEventListener("click", forgetToken);
$("pause").addEventListener("click", togglePause);
$("confirm-cancel").addEventListener("click", () => $("confirm").close("cancel"));
$("confirm-ok").addEventListener("click", () => $("confirm").close("confirm"));
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) act(button);
});
setInterval(() => tick($("service-list")), 1000);
showToken();
refresh();
