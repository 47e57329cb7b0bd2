//! An int8 export of one 1x1 convolution (`x`: IN -> OUT channels, relu6, on 28x28) between
//! a 1 -> IN conv and global pooling with a linear classifier, random weights, for studying one
//! kernel configuration in a whole firmware: `dnal deploy --export DIR --board B --run` then
//! gives `x`'s instructions in deploy.json's `cost.per_layer`.
//!
//!     cargo run --release -p dnal-firmware --example one_conv_export -- IN OUT DIR

use dnal_export::int8::{ValueRanges, quantize};
use dnal_export::{Arch, Layer};
use dnal_firmware::deploy::synthetic_images;
use dnal_firmware::synth::{conv, random_export};
use dnal_kernels::{Activation, Shape3};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let [_, cin, cout, dir] = a.as_slice() else {
        eprintln!("usage: one_conv_export IN OUT DIR");
        std::process::exit(2);
    };
    let (cin, cout): (usize, usize) = (
        cin.parse().expect("IN: a channel count"),
        cout.parse().expect("OUT: a channel count"),
    );
    let layers = vec![
        Layer::new(
            "pre",
            vec![0],
            conv(1, cin, 1, 1, 0, false, Activation::None),
        ),
        Layer::new(
            "x",
            vec![1],
            conv(cin, cout, 1, 1, 0, false, Activation::Relu6),
        ),
        Layer::new("gap", vec![2], dnal_export::Op::GlobalAvgPool),
        Layer::new(
            "fc",
            vec![3],
            dnal_firmware::synth::linear(cout, 10, Activation::None),
        ),
    ];
    let mut arch = Arch::new("one", Shape3::new(1, 28, 28), 10, layers);
    arch.dataset = "synthetic".into();
    let export = random_export(arch, 5).unwrap();
    let images = synthetic_images(export.input_len(), 4);
    let ranges = ValueRanges::of_images(&export, images.iter());
    let int8 = quantize(&export, &ranges, serde_json::Value::Null).unwrap();
    int8.write(dir).unwrap();
}
