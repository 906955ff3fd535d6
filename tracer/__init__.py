"""Interlace's core: load a model, name a site, intervene inside any nnsight trace.

    import torch, tracer
    model = tracer.load()                          # embedded SmolLM2-135M-Instruct
    head = tracer.site(model, "head_out.3")
    with torch.no_grad(), model.trace("The capital of France is"):
        before = head.read(positions=[-1], heads=[2]).save()
        tracer.interventions.zero(head, positions=[-1], heads=[2])
        logits = model.lm_head.output.save()
"""

from . import (activations, chunks, execute, files, generation, interventions, metrics, plan, pyvene, resume, reuse,
               selfcheck, sites, testing, tokens)
from .interventions import Intervention
from .pyvene import (IntervenableConfig, IntervenableModel, IntervenableRepresentationConfig,
                     RepresentationConfig, create_gemma2, create_gpt2, create_gpt2_lm, create_gpt_neo,
                     create_gemma, create_gpt_neox, create_llama, create_mistral, create_olmo,
                     create_qwen2)
from .pyvene.interventions import (AdditionIntervention, AutoencoderIntervention,
                                 BoundlessRotatedSpaceIntervention, CollectIntervention,
                                 DistributedRepresentationIntervention, LambdaIntervention,
                                 LowRankRotatedSpaceIntervention, SourcelessIntervention,
                                 LocalistRepresentationIntervention, ConstantSourceIntervention,
                                 TrainableIntervention,
                                 RotatedSpaceIntervention, SkipIntervention,
                                 SubtractionIntervention, VanillaIntervention, ZeroIntervention)
from .pyvene.causal_model import CausalModel
from .pyvene.gru import (GRUConfig, GRUForClassification, GRULMHeadModel, GRUModel, create_gru,
                         create_gru_classifier, create_gru_lm)
from .pyvene.mapping import INPUT as CONST_INPUT_HOOK, OUTPUT as CONST_OUTPUT_HOOK
from .pyvene.mlp import MLPConfig, MLPForClassification, MLPModel, create_mlp_classifier
from .pyvene.mapping import type_to_dimension_mapping, type_to_module_mapping
from .pyvene.utils import (GET_LOC, closeness_to_permutation_loss, count_parameters, embed_to_distrib,
                           format_token, get_batch_size, get_list_depth, harmonic_sigmoid_boundary, lsm,
                           random_permutation_matrix, set_seed, sigmoid_boundary, sm, top_vals)
from .activations import cache
from .models import ModelLoadError, load
from .selfcheck import ModelCheckError, check_model
from .sites import SITE_NAMES, Site, site, valid_sites

__all__ = ["load", "cache", "site", "Site", "valid_sites", "SITE_NAMES", "interventions",
           "Intervention", "generation", "IntervenableModel", "IntervenableConfig",
           "RepresentationConfig", "IntervenableRepresentationConfig", "VanillaIntervention",
           "AdditionIntervention", "SubtractionIntervention", "ZeroIntervention",
           "CollectIntervention", "SkipIntervention", "LambdaIntervention",
           "RotatedSpaceIntervention", "LowRankRotatedSpaceIntervention",
           "BoundlessRotatedSpaceIntervention", "AutoencoderIntervention", "execute", "plan", "metrics", "files", "pyvene", "tokens", "ModelLoadError",
           "check_model", "ModelCheckError", "selfcheck", "TrainableIntervention",
           "DistributedRepresentationIntervention", "SourcelessIntervention",
           "LocalistRepresentationIntervention", "ConstantSourceIntervention", "create_gemma2", "create_gpt2", "create_gpt2_lm",
           "create_gpt_neo", "create_gpt_neox", "create_llama", "create_mistral", "create_qwen2",
           "create_gemma", "create_olmo",
           "CausalModel", "type_to_module_mapping", "type_to_dimension_mapping", "GET_LOC", "closeness_to_permutation_loss", "count_parameters", "embed_to_distrib",
           "format_token", "get_batch_size", "get_list_depth", "harmonic_sigmoid_boundary", "lsm",
           "random_permutation_matrix", "set_seed", "sigmoid_boundary", "sm", "top_vals",
           "GRUConfig", "GRUForClassification", "GRULMHeadModel", "GRUModel", "create_gru",
           "create_gru_classifier", "create_gru_lm", "MLPConfig", "MLPForClassification",
           "MLPModel", "create_mlp_classifier", "CONST_INPUT_HOOK", "CONST_OUTPUT_HOOK"]
