/**
 * Which IP addresses a result download must not connect to: loopback,
 * private, link-local, multicast and reserved ones, where a URL from outside
 * (Kie's answer or callback) could reach the bot's own network instead of the
 * internet (server-side request forgery).
 *
 * Details: IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`,
 * the deprecated compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and 6to4
 * `2002::/16`) are judged by that IPv4 address. Anything that does not parse
 * as an address counts as private: refusing is the safe answer.
 *
 * | IPv4                                   | IPv6                                  |
 * | -------------------------------------- | ------------------------------------- |
 * | 0/8, 10/8, 100.64/10 (carrier NAT)     | ::, ::1 (and all of ::/96, as IPv4)   |
 * | 127/8, 169.254/16, 172.16/12           | fc00::/7 (unique local)               |
 * | 192.168/16, 224/4 (multicast)          | fe80::/10 and fec0::/10 (link, site)  |
 * | 240/4 (reserved), 255.255.255.255      | ff00::/8 (multicast)                  |
 */
import { isIPv4, isIPv6 } from "node:net"

/** `[network, prefix length]` of the refused IPv4 ranges (255.255.255.255 lies in 240/4). */
const PRIVATE_V4: ReadonlyArray<readonly [number, number]> = [
  [0x00000000, 8],
  [0x0a000000, 8],
  [0x64400000, 10],
  [0x7f000000, 8],
  [0xa9fe0000, 16],
  [0xac100000, 12],
  [0xc0a80000, 16],
  [0xe0000000, 4],
  [0xf0000000, 4]
]

const inRange = (value: number, [network, bits]: readonly [number, number]) =>
  bits === 0 || (value >>> (32 - bits)) === (network >>> (32 - bits))

/** The 32-bit value of a dotted IPv4 address. */
const v4Value = (ip: string): number => ip.split(".").reduce((value, part) => ((value << 8) | Number(part)) >>> 0, 0)

const privateV4 = (value: number) => PRIVATE_V4.some((range) => inRange(value, range))

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a dotted IPv4 tail converted). */
const v6Groups = (ip: string): ReadonlyArray<number> => {
  let text = ip
  const tail: Array<number> = []
  const lastColon = text.lastIndexOf(":")
  if (text.includes(".", lastColon)) {
    const v4 = v4Value(text.slice(lastColon + 1))
    tail.push(v4 >>> 16, v4 & 0xffff)
    text = text.slice(0, lastColon + 1)
    if (!text.endsWith("::")) text = text.slice(0, -1)
  }
  const halves = text.split("::")
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((group) => parseInt(group, 16)))
  const left = parse(halves[0] ?? "")
  if (halves.length === 1) return [...left, ...tail]
  const right = parse(halves[1] ?? "")
  const missing = Math.max(8 - left.length - right.length - tail.length, 0)
  return [...left, ...Array.from({ length: missing }, () => 0), ...right, ...tail]
}

const fromGroups = (high: number, low: number) => ((high << 16) | low) >>> 0

const privateV6 = (ip: string): boolean => {
  const g = v6Groups(ip)
  if (g.length !== 8 || g.some((x) => !Number.isInteger(x) || x < 0 || x > 0xffff)) return true
  const first = g[0]!
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0)
  // ::/96 (compatible, with :: and ::1) and ::ffff:0:0/96 (mapped): the IPv4 address decides.
  if (zeros(0, 5) && (g[5] === 0 || g[5] === 0xffff)) return privateV4(fromGroups(g[6]!, g[7]!))
  // NAT64 well-known prefix 64:ff9b::/96.
  if (first === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return privateV4(fromGroups(g[6]!, g[7]!))
  // 6to4 2002:aabb:ccdd::/48.
  if (first === 0x2002) return privateV4(fromGroups(g[1]!, g[2]!))
  if ((first & 0xfe00) === 0xfc00) return true // fc00::/7 unique local
  if ((first & 0xff80) === 0xfe80) return true // fe80::/10 link-local, fec0::/10 site-local
  return (first & 0xff00) === 0xff00 // ff00::/8 multicast
}

/** The address without IPv6 brackets or a zone (`[fe80::1%eth0]` → `fe80::1`). */
export const bareAddress = (host: string): string => host.replace(/^\[|\]$/g, "").replace(/%.*$/, "")

/** Whether `host` (as in a URL: IPv6 may be bracketed) is an IP address rather than a name. */
export const isIpAddress = (host: string): boolean => {
  const bare = bareAddress(host)
  return isIPv4(bare) || isIPv6(bare)
}

/** Whether a result download must not connect to `ip`; true for anything that is not an address. */
export const isPrivateAddress = (ip: string): boolean => {
  const bare = bareAddress(ip)
  if (isIPv4(bare)) return privateV4(v4Value(bare))
  if (isIPv6(bare)) return privateV6(bare.toLowerCase())
  return true
}
