// TypeScript types generated from the OpenAPI document, used as a client would: this file
// must compile under `tsc --strict`.
import type { components, paths } from "./schema";

type EventOut = components["schemas"]["EventOut"];
type Problem = components["schemas"]["Problem"];
type CreateEvent = paths["/api/events"]["post"]["requestBody"]["content"]["application/json"];
type ActionData = components["schemas"]["ActionResult"]["data"];

const request: CreateEvent = { event_type: "order.paid", payload: { order: 42 } };
const event: EventOut = {
  id: "evt_01jd8x2m7r0000000000000000",
  event_type: request.event_type,
  payload: request.payload,
  created_at: "2026-11-30T09:30:00Z",
};
const problem: Problem = { type: "urn:switchboard:problem:validation", title: "Unprocessable Entity", status: 422 };
// A paginated action's result is an array, a single one an object: both are allowed.
const pages: ActionData = [{ id: 1 }, { id: 2 }];
const single: ActionData = { id: 1 };

export const used = [event.id, problem.status, pages, single];
