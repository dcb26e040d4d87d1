//! Gradients reach every trainable tensor of each method; frozen weights get none; ADePT at
//! initialisation is exactly the frozen model with the prompt.

use adept_adapters::{Adapter, AdapterConfig, MethodKind};
use adept_backbones::bert::{random_encoder, tiny_config};
use adept_backbones::{Backbone, BertEncoder};
use adept_train::batch::Batch;
use adept_train::model::{cross_entropy, Classifier, Head, Pooling};
use adept_train::optim::{AdamW, AdamWParams};
use adept_train::tokenize::Encoded;
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn batch(dev: &Device) -> Batch {
    let a = Encoded {
        ids: vec![1, 5, 9, 13, 2],
        type_ids: vec![0; 5],
        truncated: false,
    };
    let b = Encoded {
        ids: vec![1, 7, 2],
        type_ids: vec![0, 0, 1],
        truncated: false,
    };
    Batch::collate(&[&a, &b], 0, dev).unwrap()
}

/// The classifier's encoder as the BERT family it is here (for its frozen tensors).
fn bert(model: &Classifier) -> &BertEncoder {
    model
        .backbone
        .as_any()
        .downcast_ref::<BertEncoder>()
        .expect("a BERT-family encoder")
}

fn classifier(method: MethodKind, pooling: Pooling) -> Classifier {
    let dev = Device::Cpu;
    let backbone = random_encoder(tiny_config(40), 7, &dev).unwrap();
    let (l, r) = match method {
        MethodKind::Pt => (4, 0),
        MethodKind::HeadOnly => (0, 0),
        _ => (3, 2),
    };
    let mut cfg = AdapterConfig::new(method, 16, l, r);
    cfg.max_length = 8;
    let adapter = Adapter::init(cfg, backbone.word_embedding_table(), 3).unwrap();
    let head = Head::init(16, 3, 4, &dev).unwrap();
    Classifier {
        backbone: Box::new(backbone),
        adapter,
        head,
        pooling,
    }
}

/// Two optimiser steps (the zero-initialised up-projections make some gradients exactly zero at
/// step 0), then every trainable tensor must have a non-zero gradient.
#[test]
fn every_trainable_tensor_gets_a_gradient() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    for method in [
        MethodKind::Adept,
        MethodKind::Dept,
        MethodKind::Pt,
        MethodKind::HeadOnly,
    ] {
        for pooling in [Pooling::Mean, Pooling::Cls] {
            let model = classifier(method, pooling);
            let mut opt = AdamW::new(AdamWParams::default());
            opt.add_group("all", 1e-2, model.trainable())?;
            let labels = Tensor::new(&[2u32, 0], &dev)?;
            let b = batch(&dev);
            let mut grads = None;
            for step in 0..2 {
                let mut rng = StdRng::seed_from_u64(step);
                let loss = cross_entropy(&model.forward(&b, Some(&mut rng))?, &labels)?;
                let g = loss.backward()?;
                opt.step(&g, 1.0)?;
                grads = Some(g);
            }
            let grads = grads.unwrap();
            for (name, var) in model.trainable() {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{method}: no gradient for {name}"));
                let norm = g.abs()?.sum_all()?.to_scalar::<f32>()?;
                assert!(norm > 0.0, "{method}/{pooling:?}: zero gradient for {name}");
            }
            // Frozen weights: no gradient is even computed for them.
            let bb = bert(&model);
            let frozen = [
                bb.word_embedding_table(),
                &bb.embeddings.position,
                &bb.embeddings.norm.weight,
                bb.layers[0].query.weight(),
                bb.layers[1].output.weight(),
                &bb.layers[1].output_norm.bias,
            ];
            for t in frozen {
                assert!(
                    grads.get(t).is_none(),
                    "{method}: a frozen weight received a gradient"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn frozen_weights_do_not_change_during_training() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let model = classifier(MethodKind::Adept, Pooling::Mean);
    let before = bert(&model).layers[0].query.weight().to_vec2::<f32>()?;
    let table_before = model
        .backbone
        .word_embedding_table()
        .sum_all()?
        .to_scalar::<f32>()?;
    let mut opt = AdamW::new(AdamWParams::default());
    opt.add_group("all", 1e-1, model.trainable())?;
    for step in 0..3 {
        let mut rng = StdRng::seed_from_u64(step);
        let loss = cross_entropy(
            &model.forward(&batch(&dev), Some(&mut rng))?,
            &Tensor::new(&[1u32, 2], &dev)?,
        )?;
        opt.step(&loss.backward()?, 1.0)?;
    }
    assert_eq!(
        before,
        bert(&model).layers[0].query.weight().to_vec2::<f32>()?
    );
    assert_eq!(
        table_before,
        model
            .backbone
            .word_embedding_table()
            .sum_all()?
            .to_scalar::<f32>()?
    );
    Ok(())
}

/// At initialisation ADePT's offsets are exactly 0 (W_up, b1, b2 zero), so its logits equal those
/// of plain prompt tuning with the same prompt and head.
#[test]
fn adept_at_init_equals_frozen_model_with_prompt() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let adept = classifier(MethodKind::Adept, Pooling::Mean);
    let mut pt_cfg = adept.adapter.config.clone();
    pt_cfg.method = MethodKind::Pt;
    pt_cfg.rank = 0;
    let pt = Adapter::init(pt_cfg, adept.backbone.word_embedding_table(), 3)?;
    let pt_model = Classifier {
        backbone: adept.backbone.clone(),
        adapter: pt,
        head: adept.head.clone(),
        pooling: Pooling::Mean,
    };
    let b = batch(&dev);
    // Dropout on: the hidden layer is dropped, but W_up = 0 still gives exactly zero offsets.
    let mut rng = StdRng::seed_from_u64(0);
    let x = adept.forward(&b, Some(&mut rng))?.to_vec2::<f32>()?;
    let y = pt_model.forward(&b, None)?.to_vec2::<f32>()?;
    assert_eq!(x, y);
    Ok(())
}
