//! How the format writes dnal-kernels' [`Shape3`] and [`Activation`].
//!
//! dnal-kernels has no dependencies (firmware builds it with nothing but `core`), so it cannot
//! derive serde itself; the format states their JSON here instead, as remote derives used
//! with `#[serde(with = "...")]`: a shape is `{"channels": C, "height": H, "width": W}`, an
//! activation `"none"`, `"relu"` or `"relu6"`. The type names in error messages stay
//! `Shape3` and `Activation`.

use dnal_kernels::{Activation, Shape3};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
#[serde(remote = "Shape3", rename = "Shape3")]
struct Shape3Def {
    channels: usize,
    height: usize,
    width: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Activation", rename = "Activation", rename_all = "lowercase")]
enum ActivationDef {
    None,
    Relu,
    Relu6,
}

/// One shape in a collection (`Vec`, `Option`), written as [`shape3`] writes it.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct ShapeItem(#[serde(with = "Shape3Def")] Shape3);

/// One activation in an `Option`, written as [`activation`] writes it.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct ActivationItem(#[serde(with = "ActivationDef")] Activation);

/// `#[serde(with = "dnal_export::kernel_serde::shape3")]` on a [`Shape3`] field.
pub mod shape3 {
    use super::*;

    pub fn serialize<S: Serializer>(shape: &Shape3, serializer: S) -> Result<S::Ok, S::Error> {
        Shape3Def::serialize(shape, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Shape3, D::Error> {
        Shape3Def::deserialize(deserializer)
    }
}

/// `#[serde(with = "dnal_export::kernel_serde::shapes3")]` on a `Vec<Shape3>` field.
pub mod shapes3 {
    use super::*;

    pub fn serialize<S: Serializer>(shapes: &[Shape3], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(shapes.iter().map(|&s| ShapeItem(s)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Shape3>, D::Error> {
        let items = Vec::<ShapeItem>::deserialize(deserializer)?;
        Ok(items.into_iter().map(|ShapeItem(s)| s).collect())
    }
}

/// `#[serde(with = "dnal_export::kernel_serde::activation")]` on an [`Activation`] field.
pub mod activation {
    use super::*;

    pub fn serialize<S: Serializer>(a: &Activation, serializer: S) -> Result<S::Ok, S::Error> {
        ActivationDef::serialize(a, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Activation, D::Error> {
        ActivationDef::deserialize(deserializer)
    }
}

/// `#[serde(with = "dnal_export::kernel_serde::option_activation")]` on an
/// `Option<Activation>` field (add `default` when the field may be absent).
pub mod option_activation {
    use super::*;

    pub fn serialize<S: Serializer>(
        a: &Option<Activation>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        a.map(ActivationItem).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Activation>, D::Error> {
        Ok(Option::<ActivationItem>::deserialize(deserializer)?.map(|ActivationItem(a)| a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "shape3")]
        shape: Shape3,
        #[serde(with = "shapes3")]
        shapes: Vec<Shape3>,
        #[serde(with = "activation")]
        activation: Activation,
        #[serde(
            default,
            with = "option_activation",
            skip_serializing_if = "Option::is_none"
        )]
        maybe: Option<Activation>,
    }

    #[test]
    fn shapes_and_activations_round_trip_as_the_format_writes_them() {
        let sample = Sample {
            shape: Shape3::new(3, 32, 32),
            shapes: vec![Shape3::new(1, 2, 3)],
            activation: Activation::Relu6,
            maybe: Some(Activation::None),
        };
        let json = serde_json::to_string(&sample).unwrap();
        assert_eq!(
            json,
            r#"{"shape":{"channels":3,"height":32,"width":32},"shapes":[{"channels":1,"height":2,"width":3}],"activation":"relu6","maybe":"none"}"#
        );
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), sample);
        let absent =
            r#"{"shape":{"channels":1,"height":1,"width":1},"shapes":[],"activation":"relu"}"#;
        assert_eq!(serde_json::from_str::<Sample>(absent).unwrap().maybe, None);
        let bad = serde_json::from_str::<Sample>(&json.replace("relu6", "gelu")).unwrap_err();
        assert!(bad.to_string().contains("unknown variant `gelu`"), "{bad}");
    }
}
