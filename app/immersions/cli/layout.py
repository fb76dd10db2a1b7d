"""`immersions layout`: lay out the map of the network (cached beside the model)."""

from __future__ import annotations

from immersions.cli.common import print_json
from immersions.errors import ImmersionsError


def cmd_layout(args) -> int:
    from immersions.layout.cache import layout_report, model_layout
    from immersions.layout.force import LayoutConfig
    from immersions.model.stats import load_stats

    if args.model and args.preset:
        raise ImmersionsError("give --model or --preset, not both")
    if args.preset:
        from immersions.model.checkpoint import preset_ear
        from immersions.paths import cache_dir

        model, stats = preset_ear(args.preset), None
        folder = cache_dir() / f"preset-{args.preset}"
    else:
        from immersions.model.checkpoint import load_model

        model = load_model(args.model)
        stats, folder = load_stats(model), model.folder
    try:
        cfg = LayoutConfig(seed=args.seed, theta=args.theta, repulsion_exponent=args.exponent, weights=args.weights)
    except ValueError as err:
        raise ImmersionsError(f"bad layout setting: {err}") from None
    device = None if args.device == "auto" else args.device
    result = model_layout(model, stats, cfg, folder=folder, force=args.force, save=not args.no_save,
                          device=device, progress=not args.json)
    if args.png:
        from immersions.layout.preview import save_layout_png

        save_layout_png(result.graph, result.positions, args.png,
                        title=f"{model.name}: {result.graph.nodes} neurons, {result.graph.edges} connections")
    doc = layout_report(result)
    if args.json:
        print_json(doc)
    else:
        if doc["cached"]:
            how = f"read from {doc['file']}"
        else:
            how = f"computed in {doc['seconds']:.1f} s" + ("" if args.no_save else f", saved to {doc['file']}")
        print(f"layout of {doc['nodes']} neurons and {doc['edges']} connections ({doc['levels']} levels) {how}")
        print(f"edge length ratio {doc['edge_length_ratio']:.3f} (lower is tighter); peak memory {doc['peak_memory_mb']:.0f} MB")
        if args.png:
            print(f"preview: {args.png}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("layout", help="lay out the neuron graph (cached beside the model)")
    p.add_argument("--model", help="model folder or name in models/ (default: the shipped model)")
    p.add_argument("--preset", help="an untrained preset's graph instead (seed, tiny, hifi); cached in ~/.cache/immersions")
    p.add_argument("--force", action="store_true", help="recompute even when a valid cached layout exists")
    p.add_argument("--no-save", action="store_true", help="do not write the layout file")
    p.add_argument("--png", metavar="FILE", help="draw the layout: nodes coloured by tap, a sample of edges")
    p.add_argument("--weights", default="uniform", choices=["uniform", "kernel"], help="edge weights for the springs")
    p.add_argument("--theta", type=float, default=0.6, help="Barnes-Hut opening angle")
    p.add_argument("--exponent", type=float, default=2.5, help="repulsion exponent k: force ~ 1/d^(k-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_layout)
