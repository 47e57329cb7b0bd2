//! What the search tests share.

use dnal::config::SearchConfig;

/// `config` as a quick search: vgg-small on 512 synthetic training images (128 test), 2
/// weight, 2 gate and 1 finetuning epoch, batches of 64.
pub fn quick_synthetic(config: SearchConfig) -> SearchConfig {
    SearchConfig {
        dataset: "synthetic".into(),
        train_limit: Some(512),
        test_limit: Some(128),
        epochs_weights: 2,
        epochs_gates: 2,
        epochs_finetune: 1,
        batch_size: 64,
        ..config
    }
}
