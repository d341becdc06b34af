/**
 * Resolving a result URL's host once and connecting to exactly the addresses
 * that were checked, so DNS cannot answer "public" to the check and "private"
 * to the connection a moment later (DNS rebinding).
 *
 * When to use: `ResultDownload` resolves with a `Resolve` (the system
 * resolver in production, a table in tests), checks every address, then hands
 * `pinnedLookup(addresses)` to `http.request` as its `lookup` option: Node then
 * asks it instead of DNS when it opens the socket.
 *
 * Gotchas: Node calls `lookup` with `all: true` when it may try several
 * addresses (happy eyeballs, `autoSelectFamily`), and wants one address
 * otherwise; both are answered from the pinned list. For a host that is an IP
 * literal Node does not call `lookup` at all; the literal itself was checked.
 */
import { lookup } from "node:dns/promises"
import type { LookupAddress } from "node:dns"
import type { LookupFunction } from "node:net"

/** One resolved address of a host. */
export interface ResolvedAddress {
  readonly address: string
  readonly family: 4 | 6
}

/** Every address a host name resolves to. */
export type Resolve = (hostname: string) => Promise<ReadonlyArray<ResolvedAddress>>

/** The operating system's resolver (`/etc/hosts`, then DNS), every address in its order. */
export const systemResolve: Resolve = async (hostname) =>
  (await lookup(hostname, { all: true, order: "verbatim" })).map((a) => ({
    address: a.address,
    family: a.family === 6 ? 6 : 4
  }))

const familyOf = (family: unknown): 0 | 4 | 6 =>
  family === 4 || family === "IPv4" ? 4 : family === 6 || family === "IPv6" ? 6 : 0

/** A `lookup` for `http.request` that answers every host name with the given, already checked addresses. */
export const pinnedLookup =
  (addresses: ReadonlyArray<ResolvedAddress>): LookupFunction => (_host, options, callback) => {
    const family = familyOf(options.family)
    const ofFamily = addresses.filter((a) => family === 0 || a.family === family)
    const answer = ofFamily.length > 0 ? ofFamily : addresses
    const first = answer[0]
    if (first === undefined) {
      callback(Object.assign(new Error("no checked address to connect to"), { code: "ENOTFOUND" }), "", 0)
    } else if (options.all === true) {
      callback(null, answer.map((a): LookupAddress => ({ address: a.address, family: a.family })))
    } else {
      callback(null, first.address, first.family)
    }
  }
