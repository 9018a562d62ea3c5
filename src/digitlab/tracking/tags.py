"""The names digitlab gives what it records: MLflow tags and checkpoint keys, read by the run that
writes them, the reaper that ends runs whose process died, and ``resume=``."""

# MLflow tag holding the folder a run writes its checkpoints to, for the user to read: nothing
# reads a path from a store (it may be someone else's), so `resume=<run id>` searches the job
# folders for the run's stamped last.ckpt instead (training/checkpoints.py).
CHECKPOINT_DIR_TAG = "digitlab.checkpoint_dir"
# Top-level checkpoint key holding the MLflow run id that wrote it (a plain string, so the
# checkpoint still loads with weights_only=True); `resume=<file>` continues that run.
RUN_ID_KEY = "digitlab_run_id"
# Tag of a run that an Optuna pruner stopped early (status KILLED, metrics up to that epoch).
PRUNED_TAG = "digitlab.pruned"
# The name of the model inside its run: ``runs:/<run id>/model``.
MODEL_NAME = "model"
