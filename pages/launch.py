"""Launch: any method of any family with its generated form, a study preset, or a recipe.

The forms come from each task's config dataclass (engine/core/forms.py), so every setting of every method
is here and a new method needs no page code. Models come from a finished run's checkpoint or from
uploaded weights (engine/model/uploads.py). Submitting queues a background job; Runs follows it.
"""

from __future__ import annotations

import streamlit as st

from engine.analysis.study_tables import cite
from engine.core.errors import UserError
from engine.core.forms import build_config, form_fields
from engine.methods.distill.base import DISTILLERS
from engine.methods.distill.task import DistillTask
from engine.methods.tasks import get_task
from engine.model.data import DATASETS
from engine.model.uploads import import_weights
from engine.model.zoo import MODELS, input_defaults
from engine.run.executors import available_executors
from engine.run.launch import (
    app_config,
    checkpoint_family,
    checkpoint_rows,
    dataset_rows,
    family_titles,
    methods_of,
    names_per_method,
    repeats_note,
)
from engine.run.recipes import RECIPE_TASK, RecipeTask, decode_recipe, parse_recipe
from engine.run.studies import STUDIES, StudyTask
from pages.forms import draw_form
from pages.point_actions import LAUNCH_CHECKPOINT, same_path
from pages.shared import cpu_capability, open_runner_or_stop, show_error
from store import read_labels
from store.paths import checkpoints_dir

st.title("Launch")
runner = open_runner_or_stop()
store = runner.store
cpu_capability("launch")

NAMES = {"dataset": DATASETS.names(), "model": MODELS.names(), "student": MODELS.names()}
# besides the registry's names: imagefolder:<path> to your own images, timm:<name> / torchvision:<name> models
TYPED = {"dataset", "model", "student"}


def queued(run_ids: list[str]) -> None:
    """Confirms the submission with the run ids and a link to Runs."""
    st.session_state["launch.queued"] = run_ids


def show_queued() -> None:
    ids = st.session_state.get("launch.queued")
    if ids:
        st.success(f"Queued {len(ids)} run{'s' if len(ids) > 1 else ''}: {', '.join(ids)}. Follow "
                   f"{'them' if len(ids) > 1 else 'it'} on the Runs page.", icon=":material/schedule:")
        st.page_link("pages/runs.py", label="Open Runs", icon=":material/list_alt:")


def label_fields(key: str) -> tuple[str, str]:
    """The optional run name and tags (typed text; read_labels checks them when the user starts)."""
    left, right = st.columns(2)
    name = left.text_input("Run name (optional)", key=f"{key}.run_name", placeholder="made from the task and config",
                           help="what the Runs page and `python -m engine runs` show; rename it later on Runs")
    tags = right.text_input("Tags (optional)", key=f"{key}.run_tags", placeholder="baseline, digits",
                            help="separated by commas; filter by them on the Runs page")
    return name, tags


def pick_checkpoint(label: str, key: str) -> str | None:
    """A float checkpoint: one a finished run saved, or uploaded weights for a zoo architecture. The default is
    the newest trained (or uploaded, or distilled) model, or the one chosen elsewhere ("Launch from this
    checkpoint": LAUNCH_CHECKPOINT in the session)."""
    wanted = st.session_state.pop(LAUNCH_CHECKPOINT, None)
    if wanted:
        st.session_state[f"{key}.source"] = "a finished run"
    source = st.radio(f"{label} from", ["a finished run", "uploaded weights"], horizontal=True, key=f"{key}.source")
    if source == "a finished run":
        rows = checkpoint_rows(store.points(expand=False))
        if rows.empty:
            st.info("No saved checkpoint yet: train a model first (family *train*), or upload weights.",
                    icon=":material/info:")
            return None
        labels = dict(zip(rows["artifact"], rows["label"], strict=True))
        if wanted:
            match = next((a for a in labels if same_path(a, wanted)), None)
            if match is None:
                st.warning(f"`{wanted}` is not a saved float checkpoint a method can start from (gone, or int8/"
                           f"packed weights): choose another.", icon=":material/warning:")
            else:
                st.session_state[f"{key}.run"] = match
        return st.selectbox(label, list(labels), format_func=labels.get, key=f"{key}.run")
    left, mid, right = st.columns(3)
    arch = left.selectbox("Architecture", MODELS.names(), key=f"{key}.arch", accept_new_options=True,
                          help="a zoo model, or type timm:<name> or torchvision:<name> (library options after ?, "
                               "e.g. timm:vit_tiny_patch16_224?depth=6): built without pretrained weights, yours load")
    dataset = mid.selectbox("Trained on", DATASETS.names(), key=f"{key}.dataset", accept_new_options=True,
                            help="a dataset, or type imagefolder:<path> to your images (train/<class>/...)")
    try:
        own = input_defaults(arch)
    except UserError as e:
        st.error(str(e), icon=":material/error:")
        return None
    width, image_size = 1.0, None
    if dataset.startswith("imagefolder:"):
        image_size = int(right.number_input("Image side (px)", 4, 1024, own.image_size if own else 64,
                                            key=f"{key}.size.{arch}",
                                            help="the folder's images are resized to this; a named model's own side "
                                                 "is the default"))
    if own is None:
        width = right.number_input("Width multiplier", 0.05, 4.0, 1.0, key=f"{key}.width")
    upload = st.file_uploader("Weights (.safetensors, or a .pt/.pth state_dict: loaded with weights_only=True)",
                              type=["safetensors", "pt", "pth"], key=f"{key}.file")
    if upload is None:
        return None
    try:
        directory = import_weights(upload.getvalue(), upload.name, arch, dataset, width=float(width),
                                   image_size=image_size, root=checkpoints_dir() / "uploads")
    except UserError as e:
        st.error(f"{upload.name}: {e}", icon=":material/error:")
        return None
    st.caption(f"Loaded into {arch} for {dataset}: saved as `{directory}`.")
    return directory


def method_tab() -> None:
    left, right = st.columns(2)
    titles = family_titles()
    if st.session_state.get(LAUNCH_CHECKPOINT):  # "Launch from this checkpoint": a family that starts from one
        current = st.session_state.get("launch.family")
        if current not in titles or not any(c.needs_checkpoint for c in methods_of(current)):
            st.session_state["launch.family"] = checkpoint_family()
    family = left.selectbox("Family", list(titles), format_func=titles.get, key="launch.family")
    choices = methods_of(family)
    if family == "distill":
        methods = right.multiselect("Methods (one run each)", [c.method for c in choices], default=["kd"],
                                    key="launch.distill_methods",
                                    help="; ".join(f"{c.method}: {c.description}" for c in choices))
        distill_form(methods)
        return
    by_name = {c.method: c for c in choices}
    method = right.selectbox("Method", list(by_name), key=f"launch.method.{family}",
                             format_func=lambda m: f"{m}: {by_name[m].description}")
    choice = by_name[method]
    fixed = {}
    if choice.needs_checkpoint:
        checkpoint = pick_checkpoint("Checkpoint", f"launch.{family}.ckpt")
        if checkpoint is None:
            return
        fixed["checkpoint"] = checkpoint
    config_cls = get_task(choice.task).config
    fields = form_fields(config_cls, choices=NAMES, typed=TYPED)
    form_key = f"launch.form.{choice.task}"
    values = draw_form(fields, form_key, st.session_state.get(f"{form_key}.errors"))
    if "repeats" in values:
        draft, _ = build_config(config_cls, fields, values, fixed)
        note = repeats_note(draft) if draft is not None else None
        if note:
            st.warning(note, icon=":material/content_copy:")
    name_text, tags_text = label_fields(form_key)
    if st.button("Start", type="primary", icon=":material/play_arrow:", key=f"{form_key}.submit"):
        cfg, errors = build_config(config_cls, fields, values, fixed)
        st.session_state[f"{form_key}.errors"] = errors
        if cfg is None:
            st.rerun()
        try:
            name, tags = read_labels(name_text, [tags_text])
            queued([runner.submit(choice.task, app_config(choice.task, cfg), name=name, tags=tags)])
        except UserError as e:
            show_error(e)
            return
        st.rerun()
    form_level_error(form_key)


def form_level_error(form_key: str) -> None:
    errors = st.session_state.get(f"{form_key}.errors") or {}
    if "" in errors:
        st.error(errors[""], icon=":material/error:")


def distill_form(methods: list[str]) -> None:
    teacher = pick_checkpoint("Teacher", "launch.distill.teacher")
    fields = form_fields(DistillTask, choices=NAMES, typed=TYPED)
    form_key = "launch.form.distill"
    values = draw_form(fields, form_key, st.session_state.get(f"{form_key}.errors"))
    settings: dict[str, tuple] = {}
    for method in methods:
        own = form_fields(DISTILLERS.get(method).config)
        if own:
            with st.expander(f"{method} settings"):
                settings[method] = (own, draw_form(own, f"{form_key}.{method}",
                                                   st.session_state.get(f"{form_key}.{method}.errors")))
    name_text, tags_text = label_fields(form_key)
    if st.button("Start", type="primary", icon=":material/play_arrow:", key=f"{form_key}.submit",
                 disabled=teacher is None or not methods):
        configs, failed = [], False
        for method in methods:
            own, raw = settings.get(method, ([], {}))
            method_cfg, errors = build_config(DISTILLERS.get(method).config, own, raw)
            st.session_state[f"{form_key}.{method}.errors"] = errors
            if method_cfg is None:
                failed = True
                continue
            cfg, errors = build_config(DistillTask, fields, values,
                                       {"teacher": teacher, "method": method, "settings": method_cfg.to_dict()})
            st.session_state[f"{form_key}.errors"] = errors
            failed |= cfg is None
            configs.append(cfg)
        if failed:
            st.rerun()
        try:
            name, tags = read_labels(name_text, [tags_text])
            queued([runner.submit("distill", app_config("distill", cfg), name=run_name, tags=tags)
                    for cfg, run_name in zip(configs, names_per_method(name, methods), strict=True)])
        except UserError as e:
            show_error(e)
            return
        st.rerun()
    if teacher is None:
        st.caption("Choose a teacher checkpoint to start.")
    form_level_error(form_key)


def study_tab() -> None:
    st.caption("The papers' experiments as presets. *Quick* cuts the budgets so a first run shows real curves "
               "in minutes; its numbers are a check, not findings.")
    names = list(STUDIES)
    study = st.selectbox("Study", names, key="launch.study.name",
                         format_func=lambda n: f"{n} ({cite(STUDIES[n].seeds) or 'no paper'}): {STUDIES[n].description}")
    left, right = st.columns(2)
    dataset = left.selectbox("Dataset", [None, *DATASETS.names()], key="launch.study.dataset",
                             format_func=lambda d: "the recipe's" if d is None else d)
    quick = right.checkbox("Quick", value=True, key="launch.study.quick")
    executor = left.selectbox("Executor", available_executors(), key="launch.study.executor")
    name_text, tags_text = label_fields("launch.study")
    if st.button("Start the study", type="primary", icon=":material/play_arrow:", key="launch.study.submit"):
        try:
            cfg = StudyTask(study=study, dataset=dataset, quick=quick, executor=executor)
            name, tags = read_labels(name_text, [tags_text])
            queued([runner.submit("study", app_config("study", cfg), name=name or f"study {study}{' (quick)' if quick else ''}",
                                  tags=tags)])
            st.rerun()
        except UserError as e:
            show_error(e)


def recipe_tab() -> None:
    st.caption("A recipe chains tasks with sweep axes (see `examples/*.yaml`); finished units already in the "
               "store are reused.")
    upload = st.file_uploader("Recipe file (.yaml)", type=["yaml", "yml"], key="launch.recipe.file")
    text = st.text_area("or paste it here", height=220, key="launch.recipe.text",
                        placeholder="name: my-recipe\ndataset: digits\nstages:\n  - name: teacher\n    task: train\n"
                                    "    config: {model: cnn_s, train: {epochs: 2}}")
    executor = st.selectbox("Executor", available_executors(), key="launch.recipe.executor",
                            help="local runs in this app's process; ray appears when Ray is installed "
                                 "(pip install -r requirements-ray.txt)")
    name_text, tags_text = label_fields("launch.recipe")
    if st.button("Validate and start", type="primary", icon=":material/play_arrow:", key="launch.recipe.submit"):
        try:
            source = decode_recipe(upload.getvalue(), upload.name) if upload is not None else text
            name, tags = read_labels(name_text, [tags_text])
        except UserError as e:
            show_error(e)
            return
        try:
            cfg = recipe_config(source, executor)
            queued([runner.submit(RECIPE_TASK, cfg, name=name or str(cfg.recipe.get("name") or "recipe"), tags=tags)])
            st.rerun()
        except UserError as e:
            st.error(f"The recipe is not valid: {e}", icon=":material/error:")


def recipe_config(source: str, executor: str) -> RecipeTask:
    if not source.strip():
        raise UserError("it is empty: upload a .yaml file or paste a recipe")
    doc = parse_recipe(source)  # bounded: a few hundred bytes of nested aliases cannot fill the server's memory
    if not isinstance(doc, dict):
        raise UserError("it must be a mapping with name, dataset and stages")
    return app_config(RECIPE_TASK, RecipeTask(recipe=doc, executor=executor))


show_queued()
method, study, recipe = st.tabs(["Method", "Study preset", "Recipe"])
with method:
    try:
        method_tab()
    except UserError as e:
        show_error(e)
with study:
    study_tab()
with recipe:
    recipe_tab()
with st.expander("Datasets on this machine"):
    st.dataframe(dataset_rows(), hide_index=True, key="launch.datasets")
    st.caption("mnist5k and digits are embedded; the others are downloaded only when a train run asks for it "
               "(its *download* switch).")
