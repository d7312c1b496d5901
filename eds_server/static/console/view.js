// What the console shows, built from the API's data as DOM nodes (text is always set as
// text, never parsed as HTML: node ids and host names come from outside).

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const hidden = (text) => h("span", { class: "visually-hidden" }, text);

// Characters that are invisible or reorder text: controls, bidi overrides and isolates (U+202E
// shows what follows reversed), zero-width characters, line separators. A node id or label may hold
// them (Envoys choose their own); they are shown as their escapes, never applied.
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/gu;

const escape = (char) => `\\u${char.codePointAt(0).toString(16).padStart(4, "0")}`;

/** A value from outside as text nodes, with its invisible characters as visible `\u202e` marks. */
function outside(text) {
  const value = String(text);
  const parts = [];
  let last = 0;
  for (const match of value.matchAll(INVISIBLE)) {
    parts.push(value.slice(last, match.index), h("span", { class: "escaped", title: "an invisible character" }, escape(match[0])));
    last = match.index + match[0].length;
  }
  parts.push(value.slice(last));
  return parts.filter((part) => part !== "");
}

/** An id (node id, version, cluster) in a cell: isolated, wrapped and cut to three lines, whole in its title. */
function longId(text, tag = "code", attributes = {}) {
  const title = String(text).replace(INVISIBLE, escape);
  return h(tag, { ...attributes, class: `long-id ${attributes.class ?? ""}`.trim(), title }, outside(text));
}

/** `10.0.0.5:8001`, `[::1]:8001`: how host URLs name a host (the API also takes `[::1]` as an address). */
export function endpointOf(host) {
  const ip = String(host.ip_address).replace(/^\[(.*)\]$/, "$1");
  return ip.includes(":") ? `[${ip}]:${host.port}` : `${ip}:${host.port}`;
}

// Ids derived from names, for aria-labelledby; service names are [A-Za-z0-9._-], node ids anything.
const idFor = (prefix, text) => `${prefix}-${[...text].map((c) => (/[A-Za-z0-9_-]/.test(c) ? c : `_${c.codePointAt(0)}`)).join("")}`;

// ---- durations and times, kept current between refreshes by tick() ----

function seconds(value) {
  const s = Math.max(0, Math.round(value));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

function ttlText(deadline, ttl, now) {
  return `${seconds((deadline - now) / 1000)} left of ${seconds(ttl)}`;
}

function agoText(time, now) {
  const s = (now - time) / 1000;
  return s < 1.5 ? "just now" : `${seconds(s)} ago`;
}

/** Update every countdown and "ago" in `root` to `now` (ms), in place. */
export function tick(root, now = Date.now()) {
  for (const el of root.querySelectorAll("[data-deadline]")) {
    const deadline = Number(el.dataset.deadline);
    el.textContent = ttlText(deadline, Number(el.dataset.ttl), now);
    const share = (deadline - now) / 10 / Number(el.dataset.ttl);
    const bar = el.parentElement.querySelector(".ttl-bar > span");
    if (bar) bar.style.width = `${Math.max(0, Math.min(100, share)).toFixed(1)}%`;
  }
  for (const el of root.querySelectorAll("[data-since]")) el.textContent = agoText(Number(el.dataset.since), now);
}

// ---- tables that stay tables for screen readers when CSS stacks them on a phone ----

function table({ caption, columns, rows }) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { role: "table" },
      h("caption", { class: "visually-hidden" }, caption),
      h(
        "thead",
        { role: "rowgroup" },
        h(
          "tr",
          { role: "row" },
          columns.map((column) =>
            h("th", { scope: "col", role: "columnheader", class: column.class }, column.hidden ? hidden(column.label) : column.label),
          ),
        ),
      ),
      h(
        "tbody",
        { role: "rowgroup" },
        rows.map((row) =>
          h(
            "tr",
            { role: "row", class: row.class },
            row.cells.map((cell, index) => {
              const column = columns[index];
              const attributes = { class: column.class, dataset: column.hidden ? {} : { label: column.label } };
              return index === 0
                ? h("th", { ...attributes, scope: "row", role: "rowheader" }, cell)
                : h("td", { ...attributes, role: "cell" }, cell);
            }),
          ),
        ),
      ),
    ),
  );
}

// ---- hosts ----

const HEALTH_TONE = {
  HEALTHY: "good",
  DRAINING: "warn",
  DEGRADED: "warn",
  UNHEALTHY: "bad",
  TIMEOUT: "bad",
  UNKNOWN: "muted",
};

function badge(text, tone, title) {
  return h("span", { class: `badge ${tone}`, title }, text);
}

/** Hosts grouped as Envoy groups them: by priority, then locality (region, zone, sub-zone). */
export function groupHosts(hosts) {
  const groups = new Map();
  for (const host of hosts) {
    const tags = host.tags ?? {};
    const locality = { region: tags.region ?? "", zone: tags.az ?? "", subZone: tags.sub_zone ?? "" };
    const priority = host.priority ?? 0;
    const key = JSON.stringify([priority, locality.region, locality.zone, locality.subZone]);
    if (!groups.has(key)) groups.set(key, { priority, locality, hosts: [] });
    groups.get(key).hosts.push(host);
  }
  const sortKey = (g) => [g.locality.region, g.locality.zone, g.locality.subZone].join("\u0000");
  return [...groups.values()].sort((a, b) => a.priority - b.priority || sortKey(a).localeCompare(sortKey(b)));
}

function localityWords(locality) {
  const parts = [
    ["region", locality.region],
    ["zone", locality.zone],
    ["sub-zone", locality.subZone],
  ].filter(([, value]) => value);
  return parts.length ? parts : null;
}

function localityLabel(locality) {
  const parts = localityWords(locality);
  return parts ? parts.map(([name, value]) => `${name} ${value}`).join(", ") : "no locality";
}

function ttlCell(service, host, fetchedAt) {
  if (host.ttl === undefined) return h("span", { class: "muted" }, "none");
  const deadline = fetchedAt + (host.expires_in ?? host.ttl) * 1000;
  return h(
    "span",
    { class: "ttl", dataset: { live: `ttl ${service.name} ${endpointOf(host)}` } },
    h("span", { dataset: { deadline, ttl: host.ttl } }, ttlText(deadline, host.ttl, fetchedAt)),
    h("span", { class: "ttl-bar", "aria-hidden": "true" }, h("span")),
  );
}

function hostActions(service, host) {
  const endpoint = endpointOf(host);
  const draining = host.health_status === "DRAINING";
  const action = draining ? "undrain" : "drain";
  const common = { type: "button", dataset: { service: service.name, endpoint } };
  return h(
    "div",
    { class: "row-actions" },
    h(
      "button",
      { ...common, class: "small", dataset: { ...common.dataset, action, key: `health ${service.name} ${endpoint}` } },
      draining ? "Undrain" : "Drain",
      hidden(` ${endpoint}`),
    ),
    h(
      "button",
      { ...common, class: "small danger", dataset: { ...common.dataset, action: "remove-host", key: `remove ${service.name} ${endpoint}` } },
      "Remove",
      hidden(` ${endpoint}`),
    ),
  );
}

function hostGroup(service, group, fetchedAt) {
  const total = group.hosts.reduce((sum, host) => sum + (host.tags?.load_balancing_weight ?? 1), 0);
  const words = localityWords(group.locality);
  return h(
    "div",
    { class: "group" },
    h(
      "h4",
      {},
      h("span", { class: "priority" }, `Priority ${group.priority}`),
      h(
        "span",
        { class: "locality" },
        words
          ? words.map(([name, value]) => h("span", { class: "locality-part" }, h("span", { class: "muted" }, `${name} `), h("bdi", {}, outside(value))))
          : h("span", { class: "muted" }, "no locality"),
      ),
    ),
    table({
      caption: `Hosts of ${service.name} at priority ${group.priority}, ${localityLabel(group.locality)}`,
      columns: [
        { label: "Endpoint", class: "col-wide" },
        { label: "Weight", class: "col-number" },
        { label: "Health" },
        { label: "Canary" },
        { label: "TTL" },
        { label: "Actions", hidden: true, class: "col-actions" },
      ],
      rows: group.hosts.map((host) => {
        const weight = host.tags?.load_balancing_weight ?? 1;
        return {
          class: host.health_status === "DRAINING" ? "draining" : undefined,
          cells: [
            [h("code", {}, endpointOf(host)), host.hostname ? h("span", { class: "sub" }, host.hostname) : null],
            [String(weight), h("span", { class: "sub" }, `${Math.round((100 * weight) / total)}%`, hidden(" of the locality"))],
            badge(host.health_status, HEALTH_TONE[host.health_status] ?? "muted"),
            host.tags?.canary ? badge("canary", "accent") : h("span", { class: "muted" }, "no"),
            ttlCell(service, host, fetchedAt),
            hostActions(service, host),
          ],
        };
      }),
    }),
  );
}

// ---- Envoys (rows of GET /clients) ----

function clientState(client) {
  if (client.subscribed === false)
    return badge("stopped polling", "muted", "no sign of life lately: not counted among the Envoys that must have a change");
  if (client.transport === "grpc" && client.rejected)
    return [badge("rejected", "bad", "Envoy NACKed the current version"), client.error ? longId(client.error, "span", { class: "sub" }) : null];
  if (client.stuck)
    return badge("stuck", "bad", "keeps asking with an older version after it was sent the current one: Envoy most likely rejected the update");
  if (client.in_sync) return badge("in sync", "good");
  return badge("updating", "warn", "holds an older version; it gets the current one on its next poll");
}

function clientsTable(name, clients) {
  return table({
    caption: `Envoys polling ${name}`,
    columns: [
      { label: "Node", class: "col-wide" },
      { label: "Envoy" },
      { label: "Holds", class: "col-version" },
      { label: "State" },
      { label: "Last poll" },
      { label: "Polls", class: "col-number" },
    ],
    rows: clients.map((client) => {
      const since = Date.parse(client.last_poll);
      const live = `${client.resource_name} ${client.api} ${client.node_id}`;
      return {
        class: client.stuck ? "stuck" : undefined,
        cells: [
          [client.node_id ? longId(client.node_id) : h("code", {}, "(no node id)"), client.cluster ? longId(client.cluster, "span", { class: "sub" }) : null],
          [client.envoy_version ? longId(client.envoy_version, "span") : "unknown", h("span", { class: "sub" }, client.transport === "grpc" ? `gRPC ${client.mode}` : client.api)],
          [
            client.version_held ? longId(client.version_held) : h("span", { class: "muted" }, "nothing yet"),
            client.in_sync ? null : h("span", { class: "sub" }, "current ", h("code", {}, client.current_version)),
          ],
          clientState(client),
          h(
            "time",
            { datetime: client.last_poll, title: client.last_poll, dataset: { live: `since ${live}` } },
            Number.isNaN(since) ? client.last_poll : h("span", { dataset: { since } }, agoText(since, Date.now())),
          ),
          h("span", { dataset: { live: `polls ${live}` } }, String(client.polls)),
        ],
      };
    }),
  });
}

function envoysOf(name, state) {
  const heading = h("h4", {}, "Envoys polling it");
  if (state.clientsProblem) return h("div", { class: "envoys" }, heading, h("p", { class: "muted" }, state.clientsProblem));
  const clients = state.clients.filter((client) => client.resource_name === name);
  if (!clients.length) return h("div", { class: "envoys" }, heading, h("p", { class: "muted" }, "No Envoy has asked for this service yet."));
  const stuck = clients.filter((client) => client.stuck).length;
  return h(
    "div",
    { class: "envoys" },
    heading,
    clientsTable(name, clients),
    stuck
      ? h(
          "p",
          { class: "note bad" },
          stuck === 1
            ? [
                h("strong", {}, "1 Envoy is stuck: "),
                "it keeps asking with an older version after it was sent the current one, the REST sign that it rejected the update. ",
                "Check its log and its update_rejected counter.",
              ]
            : [
                h("strong", {}, `${stuck} Envoys are stuck: `),
                "they keep asking with an older version after they were sent the current one, the REST sign that they rejected the update. ",
                "Check their logs and their update_rejected counters.",
              ],
        )
      : null,
  );
}

// ---- services ----

/** "3 of 4 Envoys have it": of the Envoys polling the service now, those holding its current version. */
function propagationOf(clients) {
  const polling = clients.filter((client) => client.subscribed !== false);
  const have = polling.filter((client) => client.in_sync).length;
  const gone = clients.length - polling.length;
  const text = polling.length
    ? `${have} of ${polling.length} ${polling.length === 1 ? "Envoy has" : "Envoys have"} it`
    : "no Envoy polls it";
  return h(
    "span",
    { class: `propagation${have < polling.length ? " behind" : ""}`, dataset: { propagation: "" } },
    text,
    gone ? h("span", { class: "sub" }, ` · ${gone} stopped polling`) : null,
  );
}

function service(service, state) {
  const titleId = idFor("service", service.name);
  const clients = state.clients?.filter((client) => client.resource_name === service.name) ?? [];
  const stuck = clients.filter((client) => client.stuck).length;
  const common = { type: "button", dataset: { service: service.name } };
  return h(
    "section",
    { class: `service${stuck ? " has-stuck" : ""}`, "aria-labelledby": titleId, dataset: { serviceName: service.name } },
    h(
      "header",
      { class: "service-head" },
      h("h3", { id: titleId, tabindex: "-1" }, service.name),
      h(
        "p",
        { class: "meta" },
        h("span", {}, "version ", h("code", {}, service.version)),
        h("span", {}, `${service.hosts.length} ${service.hosts.length === 1 ? "host" : "hosts"}`),
        state.clients ? propagationOf(clients) : null,
        stuck ? badge(`${stuck} stuck`, "bad") : null,
      ),
      h(
        "div",
        { class: "service-actions" },
        h("button", { ...common, dataset: { ...common.dataset, action: "add-here", key: `add ${service.name}` } }, "Add a host", hidden(` to ${service.name}`)),
        h(
          "button",
          { ...common, class: "danger", dataset: { ...common.dataset, action: "delete-service", key: `delete ${service.name}` } },
          "Delete",
          hidden(` service ${service.name}`),
        ),
      ),
    ),
    service.hosts.length
      ? groupHosts(service.hosts).map((group) => hostGroup(service, group, state.fetchedAt))
      : h("p", { class: "empty" }, "No hosts: Envoys polling this service are told it has no endpoints."),
    envoysOf(service.name, state),
  );
}

function unregisteredEnvoys(state) {
  if (!state.clients) return null;
  const known = new Set(state.services.map((s) => s.name));
  const names = [...new Set(state.clients.filter((c) => !known.has(c.resource_name)).map((c) => c.resource_name))].sort();
  if (!names.length) return null;
  return h(
    "section",
    { class: "service orphans", "aria-labelledby": "orphans-title" },
    h(
      "header",
      { class: "service-head" },
      h("h3", { id: "orphans-title" }, "Envoys asking for services that are not registered"),
      h("p", { class: "meta" }, "They are answered with no endpoints until someone registers the service."),
    ),
    names.map((name) => [h("h4", {}, h("code", {}, name)), clientsTable(name, state.clients.filter((c) => c.resource_name === name))]),
  );
}

export function renderServices(state) {
  if (!state.services.length)
    return [
      h("p", { class: "empty" }, "No services are registered yet. Add a host with the form: its service is created with it."),
      unregisteredEnvoys(state),
    ];
  return [...state.services.map((s) => service(s, state)), unregisteredEnvoys(state)];
}

export function renderSummary(state) {
  const hosts = state.services.flatMap((s) => s.hosts);
  const healthy = hosts.filter((host) => host.health_status === "HEALTHY").length;
  const stuck = state.clients?.filter((client) => client.stuck).length ?? 0;
  const nodes = state.clients ? new Set(state.clients.map((client) => client.node_id)).size : null;
  const tile = (label, value, detail, tone = "") =>
    h("div", { class: `tile ${tone}` }, h("dt", {}, label), h("dd", {}, h("span", { class: "value" }, value), detail ? h("span", { class: "sub" }, detail) : null));
  return h(
    "dl",
    { class: "tiles" },
    tile("Services", state.services.length),
    tile("Hosts", hosts.length, `${healthy} healthy`),
    tile("Envoys", nodes ?? "?", nodes === null ? "clients view unavailable" : "polling"),
    tile("Stuck Envoys", state.clients ? stuck : "?", null, stuck ? "bad" : ""),
  );
}

/** What a refresh must re-draw for: everything but countdowns, poll times and counts. */
export function structure(state) {
  return JSON.stringify([
    state.services.map((s) => [s.name, s.version, s.hosts.map(({ expires_in, ...host }) => host)]),
    state.clients?.map(({ last_poll, polls, ...client }) => client) ?? state.clientsProblem,
  ]);
}
