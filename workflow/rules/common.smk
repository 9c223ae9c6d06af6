# Discovery and sharding happen here, when the workflow is parsed: the shard
# jobs' inputs are the image files themselves, so Snakemake's own rerun
# triggers (mtime, the set of inputs, params) decide which shards to redo.
from imgshard.config import resolve_workers
from imgshard.discover import find_images
from imgshard.labels import align, read_labels
from imgshard.probe import common_size
from imgshard.shard import assign, shard_name

try:
    IMAGES = find_images(config["images_dir"], config["image_list"])
    LABELS, LEFT_OUT = None, []
    if config["labels"]:
        LABELS = read_labels(config["labels"])
        IMAGES, LEFT_OUT, warnings = align(
            LABELS, IMAGES, config["labels"], config["on_error"]
        )
        for warning in warnings:
            print(f"imgshard: warning: {warning}", file=sys.stderr)
    if config["image_size"] is None:
        HEIGHT, WIDTH, _ = common_size(config["images_dir"], IMAGES)
    else:
        HEIGHT, WIDTH = config["image_size"]
except ImgshardError as e:
    hint = ""
    if config["images_dir"] == "demo/images" and not os.path.isdir("demo/images"):
        hint = " (`make demo` writes the demo images, or set images_dir to yours)"
    raise WorkflowError(f"{e}{hint}") from None

SHARDS = assign(IMAGES, config["shards"])
SHARD_NAMES = [shard_name(i, config["shards"]) for i in range(config["shards"])]
# Shards live beside the dataset: a virtual dataset refers to them by relative path.
SHARD_DIR = os.path.splitext(config["output"])[0] + ".shards"
STATS = os.path.join(os.path.dirname(config["output"]), "stats.json")
REPORT_DIR = os.path.join(os.path.dirname(config["output"]), "report")
WORKERS = resolve_workers(config["workers"])


def get_shard_images(wildcards):
    return [os.path.join(config["images_dir"], p) for p in SHARDS[int(wildcards.shard)]]


def get_labels_file(wildcards):
    # ancient: a new CSV's mtime alone redoes nothing; get_labels_digest says which shards changed.
    return ancient(config["labels"]) if config["labels"] else []


def get_labels_digest(wildcards):
    """Changes exactly when the labels of this shard's images change."""
    return LABELS.digest(SHARDS[int(wildcards.shard)]) if LABELS else ""


def get_shard_files(wildcards):
    return expand(f"{SHARD_DIR}/shard-{{shard}}.h5", shard=SHARD_NAMES)


def get_shard_stats(wildcards):
    return expand(f"{SHARD_DIR}/shard-{{shard}}.json", shard=SHARD_NAMES)


def get_pixel_params():
    """Every setting that changes stored pixels: a change to one redoes every shard.

    Nothing else goes here: adding or removing one image must not change them.
    """
    resizing = config["image_size"] is not None
    return {
        "shape": [HEIGHT, WIDTH],
        "compression": config["compression"],
        "resize": config["resize"] if resizing else None,
        "pad_value": config["pad_value"] if resizing else 0,
    }
