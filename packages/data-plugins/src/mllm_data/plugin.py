"""Entry-point module: registers this distribution's components (specs only, no torch)."""

from __future__ import annotations

from mllm import ComponentSpec, Register, hookimpl


@hookimpl(specname="mllm_register_datasets")
def register_easyvqa_dataset(register: Register) -> None:
    register(ComponentSpec(name="easyvqa", impl="mllm_data.easyvqa:EasyVQA", config="mllm_data.easyvqa:EasyVQAConfig",
                           description="easy-VQA questions (the easy-vqa package) as single-turn conversations"))


@hookimpl(specname="mllm_register_text_corpora")
def register_easyvqa_corpus(register: Register) -> None:
    register(ComponentSpec(name="easyvqa", impl="mllm_data.easyvqa:EasyVQACorpus",
                           description="easy-VQA's distinct questions and answers: tokenizer_corpus of a tiny model "
                                       "trained on easy-VQA"))


@hookimpl(specname="mllm_register_datasets")
def register_easyvqa_named_dataset(register: Register) -> None:
    register(ComponentSpec(name="easyvqa-named", impl="mllm_data.easyvqa_named:EasyVQANamed",
                           config="mllm_data.easyvqa_named:EasyVQANamedConfig",
                           description="easy-VQA images of named individuals (a colour+shape given an invented "
                                       "name): 'who is this?' -> the name"))


@hookimpl(specname="mllm_register_datasets")
def register_file_datasets(register: Register) -> None:
    """Datasets that read upstream files as they are (LLaVA JSON, ScienceQA, HF datasets, QA folders)."""
    for name, module, cls, description in (
        ("llava-json", "llava_json", "LlavaJson", "LLaVA conversation data (JSON or JSON Lines) with an image folder"),
        ("scienceqa", "scienceqa", "ScienceQA", "ScienceQA problems.json + pid_splits.json (or a converted "
                                                "llava_*.json) in LLaVA's prompt formats (QCM-LEA, QCM-A, CQM-A)"),
        ("hf", "hf", "HFDataset", "a Hugging Face datasets dataset on disk or in the local cache (extra: mllm-data[hf])"),
        ("image-qa-folder", "image_qa_folder", "ImageQAFolder",
         "images + a JSON Lines question file (question_id, image, text, answer)"),
    ):
        config = "HFDatasetConfig" if cls == "HFDataset" else f"{cls}Config"
        register(ComponentSpec(name=name, impl=f"mllm_data.{module}:{cls}", config=f"mllm_data.{module}:{config}",
                               description=description))


@hookimpl(specname="mllm_register_datasets")
def register_preference_datasets(register: Register) -> None:
    """Preference pairs for DPO: mllm-dpo's JSON and the Hugging Face / TRL format."""
    register(ComponentSpec(name="mllm-dpo-json", impl="mllm_data.preference:MllmDpoJson",
                           config="mllm_data.preference:MllmDpoJsonConfig",
                           description="mllm-dpo preference JSON (image, question, chosen, rejected, optional "
                                       "ref_win_logp/ref_rej_logp)"))
    register(ComponentSpec(name="hf-preference", impl="mllm_data.preference:HFPreference",
                           config="mllm_data.preference:HFPreferenceConfig",
                           description="Hugging Face / TRL preference data (prompt, chosen, rejected, images): "
                                       "JSON, JSON Lines or a save_to_disk folder"))


@hookimpl(specname="mllm_register_transform_ops")
def register_generation_ops(register: Register) -> None:
    """Data-generation ops of a transform stage: ReAlign's rewriting and LLaVA-Instruct's generation."""
    register(ComponentSpec(name="realign", impl="mllm_data.realign:Realign", config="mllm_data.realign:RealignConfig",
                           description="rewrite each assistant answer with a judge/generator model (ReAlign); "
                                       "the final-answer sentence kept"))
    register(ComponentSpec(name="llava-instruct", impl="mllm_data.llava_instruct:LlavaInstruct",
                           config="mllm_data.llava_instruct:LlavaInstructConfig",
                           description="LLaVA's instruction-data generation from captions and boxes "
                                       "(conversation, detail, complex)"))
