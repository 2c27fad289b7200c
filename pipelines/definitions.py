"""The KFP pipelines, built from a :class:`PipelineConfig` (its structure: which tasks, whether a checkpoint is
converted; its parameter defaults: URIs and step configs). Every task has a display name; caching is off for
the steps whose output is not a function of their inputs alone (training, registration).

    pretraining: vocabulary | convert -> preprocess -> train -> evaluate
    finetuning:  convert | pretrained model -> prepare data (per task) -> train [-> train from scratch]
                 -> evaluate -> If(gate) -> register
    full:        pretraining, then fine-tuning from the pretrained model
"""


from kfp import dsl
from kfp.dsl import Dataset, Model

from components.kfp_components import make_components
from pipelines.config import PipelineConfig, check_step_configs, yaml_text


def _train_op(components, config: PipelineConfig, target: str):
    """The train component, or on Vertex with resources a custom job (GPU / TPU VM / cloud-tpu, replicas)."""
    resources = config.resources
    if target != "vertex" or not resources.machine_type:
        return components.train
    from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component  # noqa: PLC0415

    kwargs = {"machine_type": resources.machine_type, "replica_count": resources.replica_count,
              "display_name": "train"}
    if resources.accelerator_type:
        kwargs.update(accelerator_type=resources.accelerator_type, accelerator_count=resources.accelerator_count)
    return create_custom_training_job_from_component(components.train, **kwargs)


def _training_yaml(section: dict | None, config: PipelineConfig) -> str:
    data = dict(section or {})
    if config.resources.tpu:
        data["runtime"] = {**(data.get("runtime") or {}), "tpu": "local"}
    return yaml_text(data)


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


def _pretraining_steps(c, train_op, config: PipelineConfig, corpus_uri, checkpoint_uri, vocabulary_yaml,
                       pretraining_data_yaml, pretraining_yaml):
    corpus = _import(corpus_uri, Dataset, "import corpus")
    init_model = None
    if config.checkpoint:
        init_model, encoder = _convert_checkpoint(c, config, checkpoint_uri)
    else:
        vocabulary = c.train_vocabulary(corpus=corpus, config_yaml=vocabulary_yaml)
        vocabulary.set_display_name("train vocabulary")
        encoder = vocabulary.outputs["encoder"]
    records = c.preprocess_corpus(corpus=corpus, encoder=encoder, config_yaml=pretraining_data_yaml,
                                  runner=config.beam_runner, beam_args=list(config.beam_args))
    records.set_display_name("preprocess corpus (Beam)")
    kwargs = {"init_model": init_model} if init_model is not None else {}
    trained = train_op(train_data=records.outputs["records"], config_yaml=pretraining_yaml, encoder=encoder, **kwargs)
    trained.set_display_name("pretrain").set_caching_options(False)
    evaluation = c.evaluate(model=trained.outputs["model"], eval_data=records.outputs["records"],
                            max_batches=config.pretraining_eval_batches)
    evaluation.set_display_name("evaluate pretraining")
    return trained.outputs["model"], encoder


def _finetuning_steps(c, train_op, config: PipelineConfig, init_model, encoder, task_uris, task_yamls,
                      finetuning_yaml, thresholds, model_display_name, project, region):
    train_sets, eval_sets = [], []
    for i, ((train_uri, eval_uri), data_yaml) in enumerate(zip(task_uris, task_yamls)):
        name = config.finetuning_tasks[i].data["task"]
        for split, uri, bucket in (("train", train_uri, train_sets), ("eval", eval_uri, eval_sets)):
            raw = _import(uri, Dataset, f"import {name} {split}")
            prepared = c.prepare_finetuning_data(data=raw, encoder=encoder, config_yaml=data_yaml)
            prepared.set_display_name(f"prepare {name} {split} (Beam)")
            bucket.append(prepared.outputs["records"])
    extra = {}
    if len(train_sets) > 1:
        extra = {"extra_train_data": train_sets[1], "extra_eval_data": eval_sets[1]}
    trained = train_op(train_data=train_sets[0], eval_data=eval_sets[0], config_yaml=finetuning_yaml,
                       init_model=init_model, encoder=encoder, **extra)
    trained.set_display_name("fine-tune").set_caching_options(False)
    baseline = {}
    if config.compare_from_scratch:
        scratch = train_op(train_data=train_sets[0], eval_data=eval_sets[0], config_yaml=finetuning_yaml,
                           encoder=encoder, **extra)
        scratch.set_display_name("train from scratch (baseline)").set_caching_options(False)
        baseline = {"baseline_model": scratch.outputs["model"]}
    eval_extra = {"extra_eval_data": eval_sets[1]} if len(eval_sets) > 1 else {}
    evaluation = c.evaluate(model=trained.outputs["model"], eval_data=eval_sets[0], thresholds=thresholds,
                            **eval_extra, **baseline)
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
                                    display_name=model_display_name, serving_image=config.serving_image)
        registered.set_display_name("register model").set_caching_options(False)
    return trained.outputs["model"]


def build_pipeline(config: PipelineConfig, target: str = "local"):
    """-> the @dsl.pipeline function for ``config`` (``target``: local, vertex or kubeflow)."""
    config.validate()
    check_step_configs(config)
    c = make_components(config.component_image)
    if config.trainer_image and config.trainer_image != config.component_image:
        c = type(c)(**{**c.__dict__, "train": make_components(config.trainer_image).train})
    train_op = _train_op(c, config, target)
    tasks = config.finetuning_tasks
    task_yamls = [yaml_text(t.data) for t in tasks]
    name = f"bertkeras-{config.pipeline}"
    defaults = dict(
        corpus_uri=config.corpus, checkpoint_uri=config.checkpoint or config.pretrained_model,
        vocabulary_yaml=yaml_text(config.vocabulary), pretraining_data_yaml=yaml_text(config.pretraining_data),
        pretraining_yaml=_training_yaml(config.pretraining, config),
        finetuning_yaml=_training_yaml(config.finetuning, config),
        task_a_train=tasks[0].train if tasks else "", task_a_eval=tasks[0].eval if tasks else "",
        task_b_train=tasks[1].train if len(tasks) > 1 else "", task_b_eval=tasks[1].eval if len(tasks) > 1 else "",
        thresholds=dict(config.thresholds or {}), model_display_name=config.model_display_name,
        project="", region="",
    )

    @dsl.pipeline(name=name, description=f"bertkeras {config.pipeline} pipeline")
    def pipeline(
        corpus_uri: str = defaults["corpus_uri"], checkpoint_uri: str = defaults["checkpoint_uri"],
        vocabulary_yaml: str = defaults["vocabulary_yaml"], pretraining_data_yaml: str = defaults["pretraining_data_yaml"],
        pretraining_yaml: str = defaults["pretraining_yaml"], finetuning_yaml: str = defaults["finetuning_yaml"],
        task_a_train: str = defaults["task_a_train"], task_a_eval: str = defaults["task_a_eval"],
        task_b_train: str = defaults["task_b_train"], task_b_eval: str = defaults["task_b_eval"],
        thresholds: dict = defaults["thresholds"], model_display_name: str = defaults["model_display_name"],
        project: str = "", region: str = "",
    ):
        uris = [(task_a_train, task_a_eval), (task_b_train, task_b_eval)][: len(tasks)]
        if config.pipeline in ("pretraining", "full"):
            model, encoder = _pretraining_steps(c, train_op, config, corpus_uri, checkpoint_uri, vocabulary_yaml,
                                                pretraining_data_yaml, pretraining_yaml)
        if config.pipeline in ("finetuning", "full"):
            if config.pipeline == "finetuning":
                if config.checkpoint:
                    model, encoder = _convert_checkpoint(c, config, checkpoint_uri)
                else:
                    model = _import(checkpoint_uri, Model, "import pretrained model")
                    encoder_task = c.model_encoder(model=model)
                    encoder_task.set_display_name("encoder of the pretrained model")
                    encoder = encoder_task.outputs["encoder"]
            _finetuning_steps(c, train_op, config, model, encoder, uris, task_yamls, finetuning_yaml, thresholds,
                              model_display_name, project, region)

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

