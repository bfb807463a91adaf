//! The CHAMELEON pipeline: select -> insight -> pairs -> capture -> fit -> profile.
pub mod fit;
pub mod pipeline;
pub mod prompts;
pub mod select;

pub use fit::PersonalDirection;
pub use pipeline::{
    FIT_VERSION, FitParams, FitReport, LayerChoice, Material, Mode, PairAnswers, PersonalizeError,
    Personalizer, Pooling, TokenCounts, profile_plan, user_prompt,
};
