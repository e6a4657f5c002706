// The console's pages: sign in, requests (list, filters, live status, submit), one request's
// timeline, and for admins the queue, dead letters and external services.

import { ApiError, call, follow, signIn, signUp } from "./api";
import { lineChart } from "./chart";
import { badge, h, show, time, toast } from "./dom";
import {
  type DeadLetter,
  type ExternalService,
  type QueueStats,
  type Request,
  type RequestEvent,
  type Status,
  TERMINAL,
  statusName,
} from "./types";

/** Stopped when the page changes: streams and timers of the page shown. */
export let pageScope = new AbortController();

export function newScope(): AbortSignal {
  pageScope.abort();
  toast("");
  pageScope = new AbortController();
  return pageScope.signal;
}

function explain(error: unknown): string {
  if (error instanceof ApiError) {
    const violations = error.status.details
      .flatMap((d) => (Array.isArray(d.fieldViolations) ? d.fieldViolations : []))
      .map((v: { field: string; description: string }) => `${v.field}: ${v.description}`);
    return violations.length ? violations.join("; ") : error.message;
  }
  return String(error);
}

function field(label: string, input: HTMLElement, hint?: HTMLElement): HTMLElement {
  const id = input.id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint);
}

export function loginPage(done: () => void): void {
  newScope();
  const email = h("input", { id: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", {
    id: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
    minlength: "8",
  });
  const message = h("p", { class: "error", role: "alert" });
  const submit = async (create: boolean): Promise<void> => {
    message.textContent = "";
    try {
      if (create) await signUp(email.value, password.value);
      await signIn(email.value, password.value);
      done();
    } catch (error) {
      message.textContent = explain(error);
    }
  };
  const form = h(
    "form",
    { class: "card narrow", onsubmit: (e: Event) => { e.preventDefault(); void submit(false); } },
    field("Email", email),
    field("Password", password),
    message,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Sign in"),
      h("button", { type: "button", class: "secondary", onclick: () => void submit(true) }, "Create account"),
    ),
  );
  show("Sign in", form);
}

function requestRow(request: Request, signal: AbortSignal): HTMLTableRowElement {
  const status = h("td", {}, badge(statusName(request.status)));
  const attempts = h("td", {}, String(request.attempts));
  const row = h(
    "tr",
    {},
    h("td", {}, h("a", { href: `#/requests/${request.id}` }, request.id)),
    h("td", {}, request.kind),
    h("td", {}, request.mode === "MODE_SYNC" ? "sync" : "async"),
    status,
    attempts,
    h("td", {}, time(request.createdAt)),
  );
  if (!TERMINAL.includes(request.status)) {
    // Live status through Watch, from after the status already shown.
    void follow<RequestEvent>(
      `/v1/requests/${request.id}/events`,
      (event) => {
        status.replaceChildren(badge(statusName(event.toStatus)));
        if (event.attempt) attempts.textContent = String(event.attempt);
      },
      signal,
    ).catch(() => undefined);
  }
  return row;
}

export async function requestsPage(): Promise<void> {
  const signal = newScope();
  const kinds = await call<{ kinds: string[] }>("GET", "/v1/kinds").then((k) => k.kinds);
  const kindSelect = h("select", { id: "kind" }, ...kinds.map((k) => h("option", { value: k }, k)));
  const mode = h("select", { id: "mode" },
    h("option", { value: "MODE_ASYNC" }, "async (queued)"),
    h("option", { value: "MODE_SYNC" }, "sync (wait for the result)"),
  );
  const payload = h("textarea", { id: "payload", rows: "5", spellcheck: "false", "aria-describedby": "payload-hint" });
  payload.value = '{\n  "hello": "world"\n}';
  const payloadHint = h("p", { id: "payload-hint", class: "hint" }, "JSON");
  const key = h("input", { id: "idempotency-key", maxlength: "200", autocomplete: "off" });
  const send = h("button", { type: "submit" }, "Submit");
  const message = h("p", { class: "error", role: "alert" });
  const validate = (): boolean => {
    try {
      JSON.parse(payload.value);
      payloadHint.textContent = "Valid JSON";
      payloadHint.className = "hint ok";
      payload.removeAttribute("aria-invalid");
      send.disabled = false;
      return true;
    } catch (error) {
      payloadHint.textContent = `Not JSON: ${(error as Error).message}`;
      payloadHint.className = "hint error";
      payload.setAttribute("aria-invalid", "true");
      send.disabled = true;
      return false;
    }
  };
  payload.addEventListener("input", validate);
  validate();

  const statusFilter = h("select", { id: "status-filter" },
    h("option", { value: "" }, "any status"),
    ...(["QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "DEAD", "CANCELLED"] as const).map((s) =>
      h("option", { value: `STATUS_${s}` }, s.toLowerCase()),
    ),
  );
  const kindFilter = h("select", { id: "kind-filter" },
    h("option", { value: "" }, "any kind"),
    ...kinds.map((k) => h("option", { value: k }, k)),
  );
  const body = h("tbody", {});
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "More");
  let pageToken = "";
  const load = async (reset: boolean): Promise<void> => {
    if (reset) {
      body.replaceChildren();
      pageToken = "";
    }
    const query = new URLSearchParams({ pageSize: "25" });
    if (pageToken) query.set("pageToken", pageToken);
    if (statusFilter.value) query.append("statuses", statusFilter.value);
    if (kindFilter.value) query.set("kind", kindFilter.value);
    const page = await call<{ requests: Request[]; nextPageToken: string }>("GET", `/v1/requests?${query}`);
    body.append(...page.requests.map((r) => requestRow(r, signal)));
    pageToken = page.nextPageToken;
    more.hidden = !pageToken;
  };
  statusFilter.addEventListener("change", () => void load(true));
  kindFilter.addEventListener("change", () => void load(true));
  more.addEventListener("click", () => void load(false));

  const form = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "new-request",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        if (!validate()) return;
        message.textContent = "";
        send.disabled = true;
        try {
          const answer = await call<{ request: Request; replayed: boolean }>("POST", "/v1/requests", {
            kind: kindSelect.value,
            payload: payload.value,
            mode: mode.value,
            idempotencyKey: key.value,
          });
          toast(answer.replayed ? `Replayed ${answer.request.id}` : `Submitted ${answer.request.id}`);
          await load(true);
        } catch (error) {
          message.textContent = explain(error);
        } finally {
          send.disabled = false;
        }
      },
    },
    h("h2", { id: "new-request" }, "New request"),
    h("div", { class: "row" }, field("Kind", kindSelect), field("Mode", mode), field("Idempotency key (optional)", key)),
    field("Payload", payload, payloadHint),
    message,
    h("div", { class: "actions" }, send),
  );
  const table = h(
    "table",
    {},
    h("caption", {}, "Your requests, newest first"),
    h("thead", {}, h("tr", {}, ...["Id", "Kind", "Mode", "Status", "Attempts", "Submitted"].map((c) => h("th", { scope: "col" }, c)))),
    body,
  );
  show(
    "Requests",
    form,
    h("section", { class: "card", "aria-labelledby": "list-title" },
      h("h2", { id: "list-title" }, "History"),
      h("div", { class: "row" }, field("Status", statusFilter), field("Kind", kindFilter)),
      table,
      more,
    ),
  );
  await load(true);
}

export async function requestPage(id: string): Promise<void> {
  const signal = newScope();
  const request = await call<Request>("GET", `/v1/requests/${encodeURIComponent(id)}`);
  const status = h("dd", {}, badge(statusName(request.status)));
  const attempts = h("dd", {}, String(request.attempts));
  const result = h("pre", { class: "result" }, request.result || "—");
  const failure = h("dd", {}, request.lastFailure ? `${request.lastFailure.reason}: ${request.lastFailure.message}` : "—");
  const timeline = h("ol", { class: "timeline" });
  const refresh = async (): Promise<void> => {
    const now = await call<Request>("GET", `/v1/requests/${encodeURIComponent(id)}`);
    status.replaceChildren(badge(statusName(now.status)));
    attempts.textContent = String(now.attempts);
    result.textContent = now.result || "—";
    failure.textContent = now.lastFailure ? `${now.lastFailure.reason}: ${now.lastFailure.message}` : "—";
  };
  const cancel = h("button", { type: "button", class: "secondary", hidden: TERMINAL.includes(request.status) }, "Cancel");
  cancel.addEventListener("click", async () => {
    try {
      await call("POST", `/v1/requests/${encodeURIComponent(id)}:cancel`, {});
      await refresh();
    } catch (error) {
      toast(explain(error));
    }
  });
  show(
    `Request ${request.id}`,
    h("section", { class: "card" },
      h("dl", { class: "facts" },
        h("dt", {}, "Kind"), h("dd", {}, request.kind),
        h("dt", {}, "Mode"), h("dd", {}, request.mode === "MODE_SYNC" ? "sync" : "async"),
        h("dt", {}, "Status"), status,
        h("dt", {}, "Attempts"), attempts,
        h("dt", {}, "Last failure"), failure,
        h("dt", {}, "Submitted"), h("dd", {}, time(request.createdAt)),
      ),
      h("div", { class: "actions" }, cancel),
    ),
    h("section", { class: "card", "aria-labelledby": "payload-title" }, h("h2", { id: "payload-title" }, "Payload"), h("pre", {}, request.payload)),
    h("section", { class: "card", "aria-labelledby": "result-title" }, h("h2", { id: "result-title" }, "Result"), result),
    h("section", { class: "card", "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"), timeline),
  );
  const closing = await follow<RequestEvent>(
    `/v1/requests/${encodeURIComponent(id)}/events`,
    (event) => {
      const from = event.fromStatus === "STATUS_UNSPECIFIED" ? "" : `${statusName(event.fromStatus)} → `;
      timeline.append(
        h("li", { "data-status": statusName(event.toStatus) },
          h("time", {}, time(event.at)),
          " ",
          `${from}${statusName(event.toStatus)}`,
          event.attempt ? ` (attempt ${event.attempt})` : "",
          event.detail ? h("span", { class: "detail" }, ` ${event.detail}`) : "",
        ),
      );
      status.replaceChildren(badge(statusName(event.toStatus as Status)));
    },
    signal,
  ).catch(() => null);
  if (closing && !signal.aborted) {
    cancel.hidden = true;
    await refresh();
  }
}

interface Sample {
  at: number;
  depth: Record<string, number>;
  oldest: Record<string, number>;
}

function seconds(duration: string | null): number {
  return duration ? Number.parseFloat(duration) : 0;
}

function depthOf(stats: QueueStats): number {
  return stats.states
    .filter((s) => ["queued", "scheduled", "running"].includes(s.state))
    .reduce((sum, s) => sum + Number(s.count), 0);
}

export async function adminPage(): Promise<void> {
  const signal = newScope();
  const kinds = await call<{ kinds: string[] }>("GET", "/v1/kinds").then((k) => k.kinds);
  const samples: Sample[] = [];
  const queue = h("div", {});
  const letters = h("tbody", {});
  const services = h("tbody", {});
  const selectAll = h("input", { type: "checkbox", id: "select-all", "aria-label": "Select every dead letter" });
  const requeue = h("button", { type: "button" }, "Requeue selected");

  const sampleQueue = async (): Promise<void> => {
    const sample: Sample = { at: Date.now(), depth: {}, oldest: {} };
    for (const kind of kinds) {
      const stats = await call<QueueStats>("GET", `/v1/queue/stats?kind=${encodeURIComponent(kind)}`);
      sample.depth[kind] = depthOf(stats);
      sample.oldest[kind] = seconds(stats.oldestReadyAge);
    }
    samples.push(sample);
    if (samples.length > 60) samples.shift();
    const table = h("table", {},
      h("caption", {}, "Per kind, now"),
      h("thead", {}, h("tr", {}, ...["Kind", "Depth", "Oldest waiting"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, ...kinds.map((k) => h("tr", {}, h("td", {}, k), h("td", {}, String(sample.depth[k])), h("td", {}, `${sample.oldest[k].toFixed(1)} s`)))),
    );
    queue.replaceChildren(
      lineChart("Queue depth per kind over the last samples", kinds.map((k) => ({ label: k, points: samples.map((s) => s.depth[k] ?? 0) }))),
      h("ul", { class: "legend" }, ...kinds.map((k, i) => h("li", { class: `legend-${i % 6}` }, k))),
      table,
    );
  };
  const loadLetters = async (): Promise<void> => {
    const page = await call<{ deadLetters: DeadLetter[] }>("GET", "/v1/queue/dead-letters?pageSize=100");
    letters.replaceChildren(
      ...page.deadLetters.map((d) =>
        h("tr", {},
          h("td", {}, h("input", { type: "checkbox", class: "pick", value: d.requestId, "aria-label": `Select ${d.requestId}` })),
          h("td", {}, h("a", { href: `#/requests/${d.requestId}` }, d.requestId)),
          h("td", {}, d.kind),
          h("td", {}, String(d.attempts)),
          h("td", {}, `${d.reason}: ${d.message}`),
          h("td", {}, time(d.diedAt)),
        ),
      ),
    );
    requeue.disabled = page.deadLetters.length === 0;
  };
  const loadServices = async (): Promise<void> => {
    const answer = await call<{ services: ExternalService[] }>("GET", "/v1/external-services");
    services.replaceChildren(
      ...answer.services.map((s) =>
        h("tr", {},
          h("td", {}, s.name),
          h("td", {}, badge(s.breakerState)),
          h("td", {}, String(s.calls)),
          h("td", {}, `${s.failureRate.toFixed(1)} %`),
          h("td", {}, s.kinds.join(", ")),
        ),
      ),
    );
  };
  selectAll.addEventListener("change", () => {
    for (const box of letters.querySelectorAll<HTMLInputElement>("input.pick")) box.checked = selectAll.checked;
  });
  requeue.addEventListener("click", async () => {
    const ids = [...letters.querySelectorAll<HTMLInputElement>("input.pick:checked")].map((b) => b.value);
    if (!ids.length) return toast("Select dead letters to requeue first");
    const answer = await call<{ requeued: string[]; skipped: string[] }>("POST", "/v1/queue/dead-letters:requeue", { requestIds: ids });
    toast(`Requeued ${answer.requeued.length}, skipped ${answer.skipped.length}`);
    selectAll.checked = false;
    await loadLetters();
  });

  show(
    "Operations",
    h("section", { class: "card", "aria-labelledby": "queue-title" }, h("h2", { id: "queue-title" }, "Queue"), queue),
    h("section", { class: "card", "aria-labelledby": "letters-title" },
      h("h2", { id: "letters-title" }, "Dead letters"),
      h("table", {},
        h("caption", {}, "Requests whose attempts ran out or failed for good"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, selectAll), ...["Request", "Kind", "Attempts", "Last failure", "Died"].map((c) => h("th", { scope: "col" }, c)))),
        letters,
      ),
      h("div", { class: "actions" }, requeue),
    ),
    h("section", { class: "card", "aria-labelledby": "services-title" },
      h("h2", { id: "services-title" }, "External services"),
      h("table", {},
        h("caption", {}, "Circuit breakers, as this worker sees them, over the breaker's window"),
        h("thead", {}, h("tr", {}, ...["Service", "Breaker", "Calls", "Failure rate", "Kinds"].map((c) => h("th", { scope: "col" }, c)))),
        services,
      ),
    ),
  );
  const tick = async (): Promise<void> => {
    try {
      await Promise.all([sampleQueue(), loadServices()]);
    } catch (error) {
      toast(explain(error));
    }
  };
  await Promise.all([tick(), loadLetters()]);
  const timer = setInterval(() => void tick(), 2000);
  const letterTimer = setInterval(() => void loadLetters().catch(() => undefined), 5000);
  signal.addEventListener("abort", () => {
    clearInterval(timer);
    clearInterval(letterTimer);
  });
}
