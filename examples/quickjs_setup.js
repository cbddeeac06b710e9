// The JS side of examples/quickjs_bridge.rs and tests/quickjs.rs (one copy,
// `include_str!`ed by both): a class with methods and a self-cycle, and the
// engine's own witnesses, a `WeakRef` per object (`__weak`) and a
// `FinalizationRegistry` recording each collected id in `__collected`.
// Everything is a property of `globalThis`, never a top-level `const` or
// `let` holding an object (that would keep it reachable).
class JsCounter {
    constructor(id) {
        this.id = id;
        this.value = 0;
        this.self = this; // a cycle: only run_gc() can collect it
    }
    getId() { return this.id; }
    add(n) { this.value += n; return this.value; }
    read() { return this.value; }
}
globalThis.__weak = new Map();
globalThis.__collected = [];
globalThis.__registry = new FinalizationRegistry((id) => { __collected.push(id); });
globalThis.__make = (id) => {
    const o = new JsCounter(id);
    __weak.set(id, new WeakRef(o));
    __registry.register(o, id);
    return o;
};
globalThis.__alive = (id) => {
    const w = __weak.get(id);
    return w !== undefined && w.deref() !== undefined;
};
globalThis.__takeCollected = () => {
    const c = __collected;
    __collected = [];
    return c;
};
globalThis.__forget = (id) => { __weak.delete(id); };
globalThis.__settle = () => {
    const alive = [...__weak].filter(([id, w]) => w.deref() !== undefined).map(([id]) => id);
    __weak.clear();
    return alive;
};
