/**
 * Lint rules for Effect code that no stock rule covers, loaded by oxlint
 * through `jsPlugins` in `.oxlintrc.json` (see docs/linting.md).
 *
 * `effect/no-discarded-effect`: an Effect is a description of work; a
 * statement that builds one and drops it does nothing. Inside `Effect.gen`
 * the usual slip is `Effect.logInfo("...")` or `Metric.update(...)` without
 * `yield*`: it type-checks, runs, and silently skips the log line or the
 * metric. The rule reports an expression statement that is
 *
 * - a call of a function from a namespace imported from `effect` or
 *   `effect/*` (`Effect.logInfo(...)`, `Deferred.succeed(d, x)`,
 *   `Ref.set(r, 1)`), or
 * - a `.pipe(...)` call one of whose arguments comes from such a namespace
 *   (`effect.pipe(Effect.retry(policy))`).
 *
 * It works on syntax alone (oxlint gives JS plugins no type information),
 * so it cannot see a service method that returns an Effect
 * (`telegram.sendMessage(...)` on its own line); and it leaves alone what
 * does act when called: `run*` functions (`Effect.runFork`), the
 * `*Unsafe` / `unsafe*` functions, `*OrThrow` / `*Sync` functions (used as
 * assertions), and the `Mutable*` data structures.
 */

/** Imported names that act when called, not build a description. */
const actsWhenCalled = (name) =>
  name.startsWith("run") || name.startsWith("unsafe") || name.endsWith("Unsafe") || name.endsWith("OrThrow") ||
  name.endsWith("Sync")

const fromEffect = (source) => source === "effect" || source.startsWith("effect/")

const plugin = {
  meta: { name: "effect" },
  rules: {
    "no-discarded-effect": {
      meta: {
        type: "problem",
        docs: { description: "An Effect built in a statement and dropped never runs: yield* it, return it or fork it." }
      },
      create(context) {
        /** Local names bound to an Effect module namespace (`Effect`, `Metric`, `Ref`...). */
        const namespaces = new Set()
        const isNamespace = (node) => node?.type === "Identifier" && namespaces.has(node.name)
        /** `Ns.f` or `Ns.f(...)` with `Ns` an Effect namespace and `f` not acting when called. */
        const fromNamespace = (node) => {
          const member = node?.type === "CallExpression" ? node.callee : node
          return member?.type === "MemberExpression" && !member.computed && isNamespace(member.object) &&
            member.property.type === "Identifier" && !actsWhenCalled(member.property.name)
        }
        return {
          ImportDeclaration(node) {
            if (node.importKind === "type" || !fromEffect(String(node.source.value))) return
            for (const spec of node.specifiers) {
              if (spec.importKind === "type") continue
              const local = spec.local.name
              // Named imports of modules are capitalised (`Effect`, `Metric`); `pipe`, `flow`... are functions.
              if (spec.type === "ImportNamespaceSpecifier" || /^[A-Z]/.test(local)) {
                if (!local.startsWith("Mutable")) namespaces.add(local)
              }
            }
          },
          ExpressionStatement(node) {
            const call = node.expression
            if (call.type !== "CallExpression") return
            const callee = call.callee
            if (fromNamespace(call)) {
              context.report({
                node,
                message: `This ${callee.object.name}.${callee.property.name}(...) builds an Effect and drops it, ` +
                  "so it never runs: yield* it, return it, or fork it."
              })
            } else if (
              callee.type === "MemberExpression" && !callee.computed && callee.property.type === "Identifier" &&
              callee.property.name === "pipe" && call.arguments.some(fromNamespace)
            ) {
              context.report({
                node,
                message:
                  "This .pipe(...) builds an Effect and drops it, so it never runs: yield* it, return it, or fork it."
              })
            }
          }
        }
      }
    }
  }
}

export default plugin
