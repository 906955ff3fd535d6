"""The pyvene-compatible front end: ``import tracer as pv`` runs pyvene's examples.

``config`` reads pyvene's configs and unit locations, ``interventions`` holds the intervention
classes (thin modules over ``tracer.interventions``; trace-time), ``model`` the
``IntervenableModel`` with training and generation.
"""

from .causal_model import CausalModel
from .config import (IntervenableConfig, IntervenableRepresentationConfig, RepresentationConfig)
from .interventions import (CLASSES, AdditionIntervention, AutoencoderIntervention,
                            BaseIntervention, BoundlessRotatedSpaceIntervention,
                            CollectIntervention, DistributedRepresentationIntervention,
                            LambdaIntervention, LocalistRepresentationIntervention,
                            ConstantSourceIntervention,
                            SourcelessIntervention, TrainableIntervention,
                            LowRankRotatedSpaceIntervention, RotatedSpaceIntervention,
                            SkipIntervention, SubtractionIntervention, VanillaIntervention,
                            ZeroIntervention)
from .create import (CreateError, create_gemma2, create_gpt2, create_gpt2_lm, create_gpt_neo,
                     create_gemma, create_gpt_neox, create_llama, create_mistral, create_olmo,
                     create_qwen2)
from .gru import (GRUConfig, GRUForClassification, GRULMHeadModel, GRUModel, create_gru,
                  create_gru_classifier, create_gru_lm)
from .mapping import INPUT as CONST_INPUT_HOOK, OUTPUT as CONST_OUTPUT_HOOK
from .mapping import type_to_dimension_mapping, type_to_module_mapping
from .mlp import MLPConfig, MLPForClassification, MLPModel, create_mlp_classifier
from .model import IntervenableModel
from .utils import (GET_LOC, closeness_to_permutation_loss, count_parameters, embed_to_distrib,
                    format_token, get_batch_size, get_list_depth, harmonic_sigmoid_boundary, lsm,
                    random_permutation_matrix, set_seed, sigmoid_boundary, sm, top_vals)

__all__ = ["IntervenableConfig", "IntervenableRepresentationConfig", "RepresentationConfig",
           "CLASSES", "AdditionIntervention", "AutoencoderIntervention", "BaseIntervention",
           "BoundlessRotatedSpaceIntervention", "CollectIntervention", "LambdaIntervention",
           "LowRankRotatedSpaceIntervention", "RotatedSpaceIntervention", "SkipIntervention",
           "SubtractionIntervention", "VanillaIntervention", "ZeroIntervention", "IntervenableModel",
           "TrainableIntervention", "DistributedRepresentationIntervention", "SourcelessIntervention",
           "LocalistRepresentationIntervention", "ConstantSourceIntervention", "CreateError", "create_gemma2", "create_gpt2",
           "create_gpt2_lm", "create_gpt_neo", "create_gpt_neox", "create_llama", "create_mistral",
           "create_qwen2", "create_gemma", "create_olmo", "CausalModel", "type_to_module_mapping",
           "type_to_dimension_mapping",
           "GET_LOC", "closeness_to_permutation_loss", "count_parameters",
           "embed_to_distrib", "format_token", "get_batch_size", "get_list_depth",
           "harmonic_sigmoid_boundary", "lsm", "random_permutation_matrix", "set_seed",
           "sigmoid_boundary", "sm", "top_vals", "GRUConfig", "GRUForClassification",
           "GRULMHeadModel", "GRUModel", "create_gru", "create_gru_classifier", "create_gru_lm",
           "MLPConfig", "MLPForClassification", "MLPModel", "create_mlp_classifier",
           "CONST_INPUT_HOOK", "CONST_OUTPUT_HOOK"]
