"""The KFP pipelines, built from a :class:`PipelineConfig` (its structure: which steps, whether a checkpoint is
converted; its parameter defaults: URIs, step configs and the fine-tuning tasks). Every task has a display name;
caching is off for the steps whose output is not a function of their inputs alone (training, registration).

    pretraining: vocabulary | convert -> preprocess -> pretrain -> evaluate
    finetuning:  convert | pretrained model -> ParallelFor(task: prepare train, prepare eval)
                 -> Collected -> train [-> train from scratch] -> evaluate -> gate -> If(passed) -> register
    full:        pretraining, then fine-tuning from the pretrained model

Any number of fine-tuning tasks: they are a list parameter, prepared in a ``dsl.ParallelFor`` and fanned in with
``dsl.Collected``, so the train and evaluate components take lists of datasets and one definition serves one
task or ten.
"""


import dataclasses

from kfp import dsl
from kfp.dsl import Dataset, Model

from components.kfp_components import make_components
from pipelines.config import PipelineConfig, step_json
from trainer.config import ConfigError
from trainer.training.config import TrainConfig


def _train_op(component, config: PipelineConfig, target: str, display_name: str):
    """The train component, or on Vertex with resources a custom job (GPU / TPU VM / cloud-tpu, replicas)."""
    resources = config.resources
    if target != "vertex" or not resources.machine_type:
        return component
    from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component  # noqa: PLC0415

    kwargs = {"machine_type": resources.machine_type, "replica_count": resources.replica_count,
              "display_name": display_name, "service_account": config.service_accounts.training}
    if resources.accelerator_type:
        kwargs.update(accelerator_type=resources.accelerator_type, accelerator_count=resources.accelerator_count)
    return create_custom_training_job_from_component(component, **kwargs)


def _training_json(section: TrainConfig, config: PipelineConfig, name: str) -> str:
    """A training section as its parameter; on TPU the run connects to the TPU VM it runs on."""
    if config.resources.tpu:
        section = dataclasses.replace(section, runtime=dataclasses.replace(section.runtime, tpu="local"))
    return step_json(section, name)


def task_items(config: PipelineConfig) -> list[dict]:
    """The fine-tuning tasks as the pipeline's list parameter: each task's data URIs and preprocessing config.
    ``task`` only labels an item: the loop reads ``train_uri``, ``eval_uri`` and ``data_yaml`` (on a KFP loop
    variable, ``.name`` and ``.task`` are the channel's own attributes, not the item's keys)."""
    return [{"task": t.name, "train_uri": t.train, "eval_uri": t.eval, "data_yaml": step_json(t.data, "task_data")}
            for t in config.finetuning_tasks]


def _import(uri, cls, name: str):
    task = dsl.importer(artifact_uri=uri, artifact_class=cls, reimport=False)
    task.set_display_name(name)
    return task.output


def _convert_checkpoint(c, config: PipelineConfig, checkpoint_uri):
    """-> (model, encoder) of the converted checkpoint (round trip and parity checked by the component)."""
    checkpoint = _import(checkpoint_uri, Model, "import checkpoint")
    convert = c.convert_checkpoint(checkpoint=checkpoint, reference_outputs=config.reference_outputs)
    convert.set_display_name("convert checkpoint")
    return convert.outputs["model"], convert.outputs["encoder"]


def _pretraining_steps(c, config: PipelineConfig, corpus_uri, checkpoint_uri, vocabulary_yaml,
                       pretraining_data_yaml, pretraining_yaml, target: str):
    corpus = _import(corpus_uri, Dataset, "import corpus")
    init_model = None
    if config.checkpoint:
        init_model, encoder = _convert_checkpoint(c, config, checkpoint_uri)
    else:
        vocabulary = c.train_vocabulary(corpus=corpus, config_yaml=vocabulary_yaml)
        vocabulary.set_display_name("train vocabulary")
        encoder = vocabulary.outputs["encoder"]
    records = c.preprocess_corpus(corpus=corpus, encoder=encoder, config_yaml=pretraining_data_yaml,
                                  runner=config.beam_runner, beam_args=config.beam_step_args())
    records.set_display_name("preprocess corpus (Beam)")
    kwargs = {"init_model": init_model} if init_model is not None else {}
    pretrain = _train_op(c.pretrain, config, target, "pretrain")
    trained = pretrain(train_data=records.outputs["records"], config_yaml=pretraining_yaml, encoder=encoder, **kwargs)
    trained.set_display_name("pretrain").set_caching_options(False)
    evaluation = c.evaluate_pretraining(model=trained.outputs["model"], eval_data=records.outputs["records"],
                                        max_batches=config.pretraining_eval_batches)
    evaluation.set_display_name("evaluate pretraining")
    return trained.outputs["model"], encoder


def _finetuning_steps(c, config: PipelineConfig, init_model, encoder, tasks, finetuning_yaml, thresholds,
                      model_display_name, project, region, target: str):
    with dsl.ParallelFor(tasks, name="each fine-tuning task") as task:
        prepared = {}
        for split, uri in (("train", task.train_uri), ("eval", task.eval_uri)):
            raw = _import(uri, Dataset, f"import {split} data")
            step = c.prepare_finetuning_data(data=raw, encoder=encoder, config_yaml=task.data_yaml,
                                             runner=config.beam_runner, beam_args=config.beam_step_args())
            step.set_display_name(f"prepare {split} records (Beam)")
            prepared[split] = step.outputs["records"]
    train_op = _train_op(c.train, config, target, "fine-tune")

    def collected(*splits: str) -> dict:
        """Every task's records of each split as one list (a fresh fan-in per consumer, as KFP requires)."""
        return {f"{split}_data": dsl.Collected(prepared[split]) for split in splits}

    trained = train_op(config_yaml=finetuning_yaml, init_model=init_model, encoder=encoder, **collected("train", "eval"))
    trained.set_display_name("fine-tune").set_caching_options(False)
    baseline = {}
    if config.compare_from_scratch:
        scratch = train_op(config_yaml=finetuning_yaml, encoder=encoder, **collected("train", "eval"))
        scratch.set_display_name("train from scratch (baseline)").set_caching_options(False)
        baseline = {"baseline_model": scratch.outputs["model"]}
    champion = {}
    if config.champion_tolerance is not None:
        found = c.find_champion(registry_dir=config.registry_dir, display_name=model_display_name, project=project,
                                region=region, target=config.register_target)
        found.set_display_name("find the registered model (champion)").set_caching_options(False)
        champion = {"champion": found.output}
    evaluation = c.evaluate(model=trained.outputs["model"], thresholds=thresholds, **collected("eval"), **baseline,
                            **champion)
    evaluation.set_display_name("evaluate + gate")
    verdict = c.gate(summary=evaluation.outputs["summary"])
    verdict.set_display_name("gate: all thresholds hold?")
    with dsl.If(verdict.output == True, name="gate passed"):  # noqa: E712 - a KFP condition
        if config.register_target == "local":
            registered = c.local_register(model=trained.outputs["model"], project=project, region=region,
                                          display_name=model_display_name, serving_image=config.serving_image,
                                          registry_dir=config.registry_dir)
        else:
            registered = c.register(model=trained.outputs["model"], project=project, region=region,
                                    display_name=model_display_name, serving_image=config.serving_image,
                                    model_store=config.model_store)
        registered.set_display_name("register model").set_caching_options(False)
    return trained.outputs["model"]


def build_pipeline(config: PipelineConfig, target: str = "local"):
    """-> the @dsl.pipeline function for ``config`` (``target``: local, vertex or kubeflow)."""
    config.validate()
    errors = config.target_errors(target)
    if errors:
        raise ConfigError(f"invalid PipelineConfig for target {target}:\n" + "\n".join(f"  {e}" for e in errors))
    c = make_components(config.component_image)
    if config.trainer_image and config.trainer_image != config.component_image:
        trainer = make_components(config.trainer_image)
        c = type(c)(**{**c.__dict__, "train": trainer.train, "pretrain": trainer.pretrain})
    name = f"bertkeras-{config.pipeline}"
    defaults = dict(
        corpus_uri=config.corpus, checkpoint_uri=config.checkpoint or config.pretrained_model,
        vocabulary_yaml=step_json(config.vocabulary, "vocabulary"),
        pretraining_data_yaml=step_json(config.pretraining_data, "pretraining_data"),
        pretraining_yaml=_training_json(config.pretraining, config, "pretraining"),
        finetuning_yaml=_training_json(config.finetuning, config, "finetuning"),
        finetuning_tasks=task_items(config), thresholds=config.gate_thresholds(),
        model_display_name=config.model_display_name,
    )

    @dsl.pipeline(name=name, description=f"bertkeras {config.pipeline} pipeline")
    def pipeline(
        corpus_uri: str = defaults["corpus_uri"], checkpoint_uri: str = defaults["checkpoint_uri"],
        vocabulary_yaml: str = defaults["vocabulary_yaml"], pretraining_data_yaml: str = defaults["pretraining_data_yaml"],
        pretraining_yaml: str = defaults["pretraining_yaml"], finetuning_yaml: str = defaults["finetuning_yaml"],
        finetuning_tasks: list = defaults["finetuning_tasks"], thresholds: dict = defaults["thresholds"],
        model_display_name: str = defaults["model_display_name"], project: str = "", region: str = "",
    ):
        if config.pipeline in ("pretraining", "full"):
            model, encoder = _pretraining_steps(c, config, corpus_uri, checkpoint_uri, vocabulary_yaml,
                                                pretraining_data_yaml, pretraining_yaml, target)
        if config.fine_tunes:
            if config.pipeline == "finetuning":
                if config.checkpoint:
                    model, encoder = _convert_checkpoint(c, config, checkpoint_uri)
                else:
                    model = _import(checkpoint_uri, Model, "import pretrained model")
                    encoder_task = c.model_encoder(model=model)
                    encoder_task.set_display_name("encoder of the pretrained model")
                    encoder = encoder_task.outputs["encoder"]
            _finetuning_steps(c, config, model, encoder, finetuning_tasks, finetuning_yaml, thresholds,
                              model_display_name, project, region, target)

    return pipeline


def compile_pipeline(config: PipelineConfig, output: str, target: str = "vertex") -> str:
    from kfp import compiler  # noqa: PLC0415

    from trainer import fileio  # noqa: PLC0415

    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "pipeline.yaml")
        compiler.Compiler().compile(build_pipeline(config, target), local)
        with open(local, "rb") as f:
            fileio.atomic_write_bytes(output, f.read())
    return output

