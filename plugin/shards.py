"""Operators: embeddings in shards on FiftyOne's delegated workers (``fiftyone delegated launch``).

``queue_sharded_embeddings`` (listed) splits the view into shards and queues one ``compute_embeddings_shard``
operation per shard; workers run those (delegated only: a shard is never run inside the App's request) and the
last one to land finalises the run. Thin layers over :mod:`curate_loop.runs.shards`.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .forms import form, operator_config, progress, reports_errors, results, target_samples


class ComputeEmbeddingsShard(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="compute_embeddings_shard", label="curate-loop: embeddings shard",
                                  description="Embed one shard of a sharded embeddings run (queued by 'queue "
                                              "sharded embeddings'; run by `fiftyone delegated launch`)",
                                  unlisted=True, allow_immediate_execution=False, allow_delegated_execution=True,
                                  default_choice_to_delegated=True)

    def resolve_delegation(self, ctx):
        return True

    def execute(self, ctx):  # errors raise: FiftyOne's queue must show the shard FAILED, not completed
        from curate_loop.runs.shards import run_shard

        return run_shard(ctx.dataset, ctx.params["run_id"], int(ctx.params["shard"]),
                         op_id=ctx.request_params.get("run_doc"), progress=progress(ctx))

    def resolve_output(self, ctx):
        return results(ctx, "Shard embedded", [("shard", int, "Shard"), ("computed", int, "Embedded now"),
                                               ("skipped", int, "Already embedded (skipped)")])


class QueueShardedEmbeddings(foo.Operator):
    @property
    def config(self):
        return operator_config("queue_sharded_embeddings", "curate-loop: compute embeddings on delegated workers",
                               "Split the current view into shards, each a delegated operation that "
                               "`fiftyone delegated launch` workers run")

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("key", default="clip", required=True, label="Embeddings key",
                   description="Name of the run; ids already embedded under this key are skipped")
        inputs.str("models", default="ViT-B-32", required=True, label="Model(s)",
                   description="open_clip NAME or NAME@PRETRAINED, or classical; several, comma-separated")
        inputs.int("n_shards", default=4, required=True, label="Shards",
                   description="Delegated operations to split the run into (at least one per worker)")
        inputs.int("batch_size", default=32, label="Batch size")
        return form(inputs, "Compute embeddings on delegated workers")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.shards import queue_sharded_embeddings, shard_status

        params = ctx.params
        models = [m.strip() for m in params.get("models", "ViT-B-32").split(",") if m.strip()]
        key = params.get("key", "clip")
        run_id = queue_sharded_embeddings(target_samples(ctx), key, models, int(params.get("n_shards", 4)),
                                          batch_size=int(params.get("batch_size", 32)))
        status = shard_status(ctx.dataset, key)
        return {"key": key, "run_id": run_id, "shards": status["shards"], "queued": status["queued"]}

    def resolve_output(self, ctx):
        return results(ctx, "Shards queued: start `fiftyone delegated launch` workers",
                       [("key", str, "Embeddings key"), ("run_id", str, "Sharded run"), ("shards", int, "Shards"),
                        ("queued", int, "Queued now")])
