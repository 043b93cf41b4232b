"""Data-parallel Mult-VAE / Mult-DAE / TALL over several machines with metaflow-torchrun.

    python flows/ddp_flow.py run --dataset ml-1m --nodes 2                # 2 local processes (gloo)
    python flows/ddp_flow.py run --with kubernetes:gpu=1 --nodes 4        # 4 pods, one GPU each (NCCL)
    python flows/ddp_flow.py --config cfg params/ddp_8gpu.yaml run --with batch:gpu=8 --nodes 2

``start`` makes (or reuses, ``--split-dir``) the split; ``train`` is one ``@torchrun`` step run on
``--nodes`` machines (``num_parallel``), each starting ``nproc_per_node`` ranks of
``recsys.pipeline.ddp_fit`` (``params/ddp_default.yaml``: 1 per node; one per GPU on a GPU node);
rank 0 writes the model and its result; ``join`` gathers it and ``end`` prints the curve and test
metrics. Needs ``pip install 'recsys-pipelines[distributed]'`` (metaflow-torchrun).
"""

import json
import os

from metaflow import Config, Parameter, config_expr, current, project, resources, step, torchrun

from flow_base import DatasetFlow, output_help
from flow_support import main, torchrun_compat

torchrun_compat()


@project(name="recsys_pipelines")
class DataParallelFlow(DatasetFlow):
    """Split -> one @torchrun step over --nodes machines -> result."""

    # --dataset, --data-dir, --output-dir: flow_base.DatasetFlow (no --data-path: ddp.prepare takes none)
    _help = {"output_dir": output_help("ddp/<dataset>/<run id>")
             + "; a shared volume when the nodes are separate machines"}

    cfg = Config("cfg", default_value={"nproc_per_node": 1, "gpu": 1}, parser="yaml.safe_load",
                 help="YAML with nproc_per_node (ranks per machine) and gpu (GPUs per machine); "
                      "params/ddp_default.yaml holds the defaults")
    protocol = Parameter("protocol", default="", help="evaluation protocol (default: the pretraining profile's)")
    model = Parameter("model", default="multvae", help="multvae, multdae or tall (TALL on a random_split: --protocol random_split)")
    nodes = Parameter("nodes", default=2, type=int, help="machines (num_parallel)")
    model_config = Parameter("model-config", default="{}", help="JSON of model settings, e.g. '{\"epochs\": 20}'")
    split_dir = Parameter("split-dir", default="", help="reuse a split a preprocess run saved")

    @step
    def start(self):
        """Check the request, make and save the split, fan out to the nodes."""
        from recsys.pipeline import ddp

        self.config = json.loads(self.model_config or "{}")
        ddp.check_request(self.model, self.nodes, self.config)
        self.run_dir = os.path.abspath(self.output_dir or str(ddp.STAGE.default_run_dir(self.dataset, current.run_id)))
        prepared = ddp.prepare(self.dataset, self.protocol, model=self.model,
                               output_dir=os.path.join(self.run_dir, "split"), data_dir=self.data_dir or None,
                               split_dir=self.split_dir)
        self.split_path, self.split_sha256 = str(prepared.path), prepared.sha256
        self.next(self.train, num_parallel=self.nodes)

    @resources(gpu=config_expr("cfg.gpu"), memory=16000, cpu=4)
    @torchrun(nproc_per_node=config_expr("cfg.nproc_per_node"))
    @step
    def train(self):
        """Every node: torchrun over this node's ranks; gradients all-reduced across all of them."""
        from recsys.pipeline import ddp

        out = os.path.join(self.run_dir, self.model)
        current.torch.run(entrypoint=ddp.ENTRYPOINT, torchrun_args=dict(ddp.TORCHRUN_ARGS),
                          entrypoint_args=ddp.entrypoint_args(self.split_path, self.model, self.config, out))
        self.node = current.parallel.node_index
        self.result = ddp.read_result(out) if self.node == 0 else None
        self.next(self.join)

    @step
    def join(self, inputs):
        """Keep rank 0's result."""
        self.result = next(i.result for i in inputs if i.result is not None)
        self.merge_artifacts(inputs, exclude=["node", "result"])
        self.next(self.end)

    @step
    def end(self):
        """Print the loss curve's ends and the world size."""
        h = self.result["history"]
        print(f"{self.model}: {self.result['world_size']} ranks ({self.result['backend']}), {len(h)} epochs, "
              f"loss {h[0]['loss']:.4f} -> {h[-1]['loss']:.4f}; model and result.json in "
              f"{os.path.join(self.run_dir, self.model)}")


if __name__ == "__main__":
    main(DataParallelFlow)
