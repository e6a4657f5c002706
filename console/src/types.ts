// The JSON shapes of the contract's messages (proto3 JSON mapping), as the console uses them.

export type Status =
  | "STATUS_UNSPECIFIED"
  | "STATUS_QUEUED"
  | "STATUS_SCHEDULED"
  | "STATUS_RUNNING"
  | "STATUS_SUCCEEDED"
  | "STATUS_FAILED"
  | "STATUS_DEAD"
  | "STATUS_CANCELLED";

export const TERMINAL: Status[] = ["STATUS_SUCCEEDED", "STATUS_FAILED", "STATUS_DEAD", "STATUS_CANCELLED"];

export interface Failure {
  reason: string;
  message: string;
  retryable: boolean;
}

export interface Request {
  id: string;
  kind: string;
  payload: string;
  mode: string;
  status: Status;
  idempotencyKey: string;
  attempts: number;
  result: string;
  lastFailure: Failure | null;
  createdAt: string | null;
  updatedAt: string | null;
  deadline: string | null;
}

export interface RequestEvent {
  requestId: string;
  sequence: string;
  fromStatus: Status;
  toStatus: Status;
  attempt: number;
  detail: string;
  at: string | null;
}

export interface WhoAmI {
  subject: string;
  principalKind: string;
  email: string;
  roles: string[];
}

export interface QueueStats {
  states: Array<{ state: string; count: string }>;
  oldestReadyAge: string | null;
  inFlight: string;
}

export interface DeadLetter {
  requestId: string;
  kind: string;
  attempts: number;
  reason: string;
  message: string;
  diedAt: string | null;
}

export interface ExternalService {
  name: string;
  breakerState: string;
  calls: number;
  failureRate: number;
  slowCallRate: number;
  kinds: string[];
}

/** A status without its prefix, lower case: `succeeded`. */
export function statusName(status: Status): string {
  return status.replace("STATUS_", "").toLowerCase();
}
