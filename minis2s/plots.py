"""Pictures (matplotlib, the ``plot`` extra): training curves and attention heatmaps, as PNG."""


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise RuntimeError("plots need matplotlib: pip install 'minis2s[plot]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def training_curves(history, path):
    """Loss (training and validation) and validation BLEU per epoch, side by side."""
    plt = _pyplot()
    epochs = [record["epoch"] for record in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r.get("train_loss") for r in history], marker="o", label="training (last 50 steps)")
    if any("valid_loss" in r for r in history):
        left.plot(epochs, [r.get("valid_loss") for r in history], marker="o", label="validation")
    left.set_xlabel("epoch")
    left.set_ylabel("cross-entropy per target token")
    left.legend()
    left.grid(alpha=0.3)
    bleu = [r.get("valid_bleu") for r in history]
    if any(b is not None for b in bleu):
        right.plot(epochs, bleu, marker="o", color="tab:green")
    right.set_xlabel("epoch")
    right.set_ylabel("validation BLEU (greedy)")
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def attention_heatmap(source_tokens, output_tokens, weights, path, title=None):
    """weights: (len(output) [+1 for <eos>], len(source) [+1 for <eos>]) attention of each output word."""
    plt = _pyplot()
    rows = list(output_tokens) + ["<eos>"]
    cols = list(source_tokens) + ["<eos>"]
    weights = weights[:len(rows), :len(cols)]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.5 + 0.5 * len(cols)), max(3.0, 1.5 + 0.45 * len(rows))))
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel("source")
    axes.set_ylabel("translation")
    if title:
        axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
