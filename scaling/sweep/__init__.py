"""The sweep layer: the resolver registry, budgets and skip rules, WSD branching plans, LR rules,
sweep expansion and pricing, the end-of-sweep summary and the launch checks."""
