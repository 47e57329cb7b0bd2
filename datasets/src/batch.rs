//! Shuffling, augmenting, normalising and batching an [`ImageSet`] for training and evaluation.
//!
//! Everything random about epoch `e` (the order, every crop and flip) is drawn from streams keyed
//! by `(seed, e)` and `(seed, e, batch)`, and from nothing else: a search resumed from a
//! checkpoint at epoch `e` sees the very batches the interrupted run would have seen, and a batch
//! comes out the same whether it was built inline or on the prefetch thread.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::augment::Augmentation;
use crate::image_set::{ImageSet, Shape3};
use crate::normalize::{Normalization, NormalizationTable};
use crate::seeded_rng::SeededRng;

/// How many batches the background thread may build ahead of the training loop by default.
/// Two keep the loop fed without holding much memory; building a batch takes well under a
/// millisecond per image, far less than a training step, so more would not help.
pub const DEFAULT_PREFETCH: usize = 2;

/// Stream labels, so the order stream and the augmentation streams of one seed never coincide.
const ORDER_STREAM: u64 = 1;
const AUGMENT_STREAM: u64 = 2;

/// Turns an [`ImageSet`] into a sequence of [`BatchData`] per epoch.
#[derive(Clone, Debug)]
pub struct Batcher {
    set: Arc<ImageSet>,
    normalization: Normalization,
    table: Arc<NormalizationTable>,
    batch_size: usize,
    augmentation: Augmentation,
    shuffle: bool,
    seed: u64,
    prefetch: usize,
}

impl Batcher {
    /// A batcher that visits images in order, without augmentation: what evaluation wants.
    ///
    /// Takes the set by `Arc` (an `ImageSet` converts) so that the prefetch thread can read it
    /// without copying; share one `Arc` between batchers to avoid cloning the pixels.
    /// A `batch_size` of 0 is taken as 1, since no batch can be empty.
    pub fn new(
        set: impl Into<Arc<ImageSet>>,
        normalization: Normalization,
        batch_size: usize,
    ) -> Self {
        let table = Arc::new(normalization.table());
        Batcher {
            set: set.into(),
            normalization,
            table,
            batch_size: batch_size.max(1),
            augmentation: Augmentation::none(),
            shuffle: false,
            seed: 0,
            prefetch: DEFAULT_PREFETCH,
        }
    }

    /// Augments every image with a fresh draw per epoch. Draws use the shuffle seed (0 until
    /// [`Batcher::with_shuffle`] sets one).
    pub fn with_augmentation(mut self, augmentation: Augmentation) -> Self {
        self.augmentation = augmentation;
        self
    }

    /// Visits images in a random order per epoch; the order and the augmentation of epoch `e`
    /// depend only on `(seed, e)`.
    pub fn with_shuffle(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.seed = seed;
        self
    }

    /// How many batches a background thread builds ahead (0: build each batch on the caller's
    /// thread when it is asked for). The batches are the same either way.
    pub fn with_prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
        self
    }

    /// Batches per epoch; the last, partial batch is kept.
    pub fn num_batches(&self) -> usize {
        self.set.len().div_ceil(self.batch_size)
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn set(&self) -> &ImageSet {
        &self.set
    }

    pub fn normalization(&self) -> &Normalization {
        &self.normalization
    }

    /// The batches of epoch `epoch`, built ahead on a background thread unless prefetch is 0.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        let mut order: Vec<u32> = (0..self.set.len() as u32).collect();
        if self.shuffle {
            SeededRng::for_stream(&[self.seed, ORDER_STREAM, epoch]).shuffle(&mut order);
        }
        let plan = Arc::new(EpochPlan {
            set: Arc::clone(&self.set),
            table: Arc::clone(&self.table),
            order,
            batch_size: self.batch_size,
            augmentation: self.augmentation,
            seed: self.seed,
            epoch,
        });
        let num_batches = self.num_batches();
        let producer = if self.prefetch > 0 && num_batches > 1 {
            Prefetch::start(Arc::clone(&plan), num_batches, self.prefetch)
        } else {
            None
        };
        EpochBatches {
            plan,
            next: 0,
            num_batches,
            producer,
        }
    }
}

/// What one epoch needs to build any of its batches, independently of the others.
struct EpochPlan {
    set: Arc<ImageSet>,
    table: Arc<NormalizationTable>,
    order: Vec<u32>,
    batch_size: usize,
    augmentation: Augmentation,
    seed: u64,
    epoch: u64,
}

impl EpochPlan {
    fn batch(&self, index: usize) -> BatchData {
        let shape = self.set.shape();
        let start = index * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let members = &self.order[start.min(end)..end];
        let mut images = vec![0.0f32; members.len() * shape.len()];
        let mut labels = Vec::with_capacity(members.len());
        let mut rng = SeededRng::for_stream(&[self.seed, AUGMENT_STREAM, self.epoch, index as u64]);
        // One scratch image per batch, reused for every image of it.
        let mut augmented = if self.augmentation.is_none() {
            Vec::new()
        } else {
            vec![0u8; shape.len()]
        };
        for (&member, out) in members.iter().zip(images.chunks_exact_mut(shape.len())) {
            let i = member as usize;
            let pixels = self.set.image(i);
            if self.augmentation.is_none() {
                self.table.apply(shape, pixels, out);
            } else {
                self.augmentation
                    .draw(&mut rng)
                    .apply(shape, pixels, &mut augmented);
                self.table.apply(shape, &augmented, out);
            }
            labels.push(i64::from(self.set.label(i)));
        }
        BatchData {
            images,
            labels,
            shape,
        }
    }
}

/// A background thread building the batches of one epoch in order, a few ahead.
struct Prefetch {
    receiver: Option<Receiver<BatchData>>,
    thread: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// `None` when no thread can be started: the caller then builds batches inline, which gives
    /// the same batches, only without the overlap.
    fn start(plan: Arc<EpochPlan>, num_batches: usize, depth: usize) -> Option<Self> {
        let (sender, receiver): (SyncSender<BatchData>, Receiver<BatchData>) =
            std::sync::mpsc::sync_channel(depth);
        let thread = std::thread::Builder::new()
            .name("dnal-batches".into())
            .spawn(move || {
                for index in 0..num_batches {
                    if sender.send(plan.batch(index)).is_err() {
                        return; // the epoch's iterator was dropped
                    }
                }
            })
            .ok()?;
        Some(Prefetch {
            receiver: Some(receiver),
            thread: Some(thread),
        })
    }

    /// The next batch, or `None` if the thread ended without sending it (it panicked).
    fn next(&mut self) -> Option<BatchData> {
        self.receiver.as_ref()?.recv().ok()
    }

    /// Waits for the thread and re-raises its panic, if it had one: a bug in batch building
    /// must not look like a short epoch.
    fn finish(&mut self) {
        self.receiver = None;
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The batches of one epoch, in order. Owns what it needs, so it does not borrow the batcher.
pub struct EpochBatches {
    plan: Arc<EpochPlan>,
    next: usize,
    num_batches: usize,
    producer: Option<Prefetch>,
}

impl Iterator for EpochBatches {
    type Item = BatchData;

    fn next(&mut self) -> Option<BatchData> {
        if self.next >= self.num_batches {
            return None;
        }
        let index = self.next;
        self.next += 1;
        match &mut self.producer {
            Some(producer) => match producer.next() {
                Some(batch) => Some(batch),
                None => {
                    producer.finish(); // re-raises the thread's panic
                    self.producer = None;
                    Some(self.plan.batch(index))
                }
            },
            None => Some(self.plan.batch(index)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.num_batches - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches {}

/// One batch on the host: normalised images (NCHW, f32) and labels (i64, as burn's
/// cross-entropy takes them).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchData {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    /// The shape of one image.
    pub shape: Shape3,
}

/// One batch on a burn device.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[batch, channels, height, width]`.
    pub images: Tensor<4>,
    /// `[batch]`, class indices.
    pub targets: Tensor<1, Int>,
}

impl BatchData {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The batch's images on `device` (copied), without the labels: what a forward pass takes.
    ///
    /// # Shapes
    /// `[batch, channels, height, width]`.
    pub fn images_tensor(&self, device: &Device) -> Tensor<4> {
        let s = self.shape;
        Tensor::from_data(
            TensorData::new(
                self.images.clone(),
                [self.len(), s.channels, s.height, s.width],
            ),
            device,
        )
    }

    /// Copies the batch to `device`.
    pub fn to_tensors(&self, device: &Device) -> Batch {
        self.clone().into_tensors(device)
    }

    /// Moves the batch to `device` without copying the host buffers first.
    pub fn into_tensors(self, device: &Device) -> Batch {
        let n = self.labels.len();
        let Shape3 {
            channels,
            height,
            width,
        } = self.shape;
        let images = Tensor::<4>::from_data(
            TensorData::new(self.images, [n, channels, height, width]),
            device,
        );
        let targets = Tensor::<1, Int>::from_data(TensorData::new(self.labels, [n]), device);
        Batch { images, targets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 images of 1x2x3; image i has all pixels equal to 10*i and label i % 3.
    fn small_set() -> ImageSet {
        let shape = Shape3::new(1, 2, 3);
        let pixels = (0..10u8).flat_map(|i| [10 * i; 6]).collect();
        let labels = (0..10).map(|i| i % 3).collect();
        let names = ["a", "b", "c"].map(String::from).to_vec();
        ImageSet::new(shape, pixels, labels, names).unwrap()
    }

    fn first_pixels(batches: impl Iterator<Item = BatchData>) -> Vec<f32> {
        batches
            .flat_map(|b| {
                b.images
                    .chunks_exact(6)
                    .map(|img| img[0])
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn batches_cover_the_set_in_order_with_a_partial_last_batch() {
        let batcher = Batcher::new(small_set(), Normalization::identity(1), 4);
        assert_eq!(batcher.num_batches(), 3);
        let batches: Vec<_> = batcher.epoch(0).collect();
        assert_eq!(
            batches.iter().map(BatchData::len).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        assert_eq!(batches[0].images.len(), 4 * 6);
        assert_eq!(batches[0].shape, Shape3::new(1, 2, 3));
        assert_eq!(batches[2].labels, [2, 0]);
        let expected: Vec<f32> = (0..10).map(|i| (10 * i) as f32 / 255.0).collect();
        assert_eq!(first_pixels(batches.into_iter()), expected);
    }

    #[test]
    fn normalisation_values_follow_mean_and_std() {
        let norm = Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        };
        let batch = Batcher::new(small_set(), norm, 10).epoch(0).next().unwrap();
        for (i, image) in batch.images.chunks_exact(6).enumerate() {
            let want = ((10 * i) as f32 / 255.0 - 0.5) / 0.25;
            assert!(image.iter().all(|&v| (v - want).abs() < 1e-6), "{image:?}");
        }
    }

    #[test]
    fn shuffle_is_seeded_per_epoch() {
        let batcher = Batcher::new(small_set(), Normalization::identity(1), 3).with_shuffle(42);
        let a = first_pixels(batcher.epoch(0));
        assert_eq!(a, first_pixels(batcher.epoch(0)), "same seed and epoch");
        let fresh = Batcher::new(small_set(), Normalization::identity(1), 3).with_shuffle(42);
        assert_eq!(
            a,
            first_pixels(fresh.epoch(0)),
            "a new batcher replays epoch 0"
        );
        assert_ne!(
            a,
            first_pixels(batcher.epoch(1)),
            "another epoch, another order"
        );
        let other_seed = Batcher::new(small_set(), Normalization::identity(1), 3).with_shuffle(7);
        assert_ne!(
            a,
            first_pixels(other_seed.epoch(0)),
            "another seed, another order"
        );
        let mut sorted = a.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(
            sorted,
            first_pixels(Batcher::new(small_set(), Normalization::identity(1), 3).epoch(0))
        );
    }

    #[test]
    fn prefetched_and_inline_batches_are_identical() {
        let make = |prefetch| {
            Batcher::new(small_set(), Normalization::identity(1), 3)
                .with_shuffle(9)
                .with_augmentation(Augmentation::cifar10())
                .with_prefetch(prefetch)
        };
        let inline: Vec<_> = make(0).epoch(3).collect();
        let prefetched: Vec<_> = make(4).epoch(3).collect();
        assert_eq!(inline, prefetched);
    }

    #[test]
    fn augmentation_keeps_shape_and_varies_by_epoch() {
        let shape = Shape3::new(3, 8, 8);
        let pixels: Vec<u8> = (0..4 * shape.len()).map(|i| (i % 251) as u8 + 1).collect();
        let names = vec!["only".to_string()];
        let set = ImageSet::new(shape, pixels, vec![0; 4], names).unwrap();
        let batcher = Batcher::new(set, Normalization::identity(3), 4)
            .with_augmentation(Augmentation::cifar10())
            .with_shuffle(1);
        let e0 = batcher.epoch(0).next().unwrap();
        assert_eq!(e0.images.len(), 4 * shape.len());
        assert_eq!(e0.shape, shape);
        assert_eq!(e0, batcher.epoch(0).next().unwrap());
        assert_ne!(e0.images, batcher.epoch(1).next().unwrap().images);
        // Crops bring in zero padding (value 0 after identity normalisation), which the source
        // images (all pixels >= 1) never hold.
        assert!(e0.images.contains(&0.0));
    }

    #[test]
    fn dropping_an_epoch_early_stops_its_thread() {
        let batcher = Batcher::new(small_set(), Normalization::identity(1), 1).with_prefetch(1);
        let mut epoch = batcher.epoch(0);
        assert!(epoch.next().is_some());
        assert_eq!(epoch.len(), 9);
        drop(epoch); // joins the thread; a hang here would fail the test by timeout
    }

    #[test]
    fn empty_set_and_zero_batch_size() {
        let names = vec!["a".to_string()];
        let empty = ImageSet::new(Shape3::new(1, 2, 2), vec![], vec![], names).unwrap();
        let batcher = Batcher::new(empty, Normalization::identity(1), 0);
        assert_eq!(batcher.batch_size(), 1);
        assert_eq!(batcher.num_batches(), 0);
        assert_eq!(batcher.epoch(0).count(), 0);
    }

    #[test]
    fn to_tensors_has_nchw_images_and_int_targets() {
        let device = Device::flex();
        let batch = Batcher::new(small_set(), Normalization::identity(1), 4)
            .epoch(0)
            .next()
            .unwrap();
        let tensors = batch.to_tensors(&device);
        assert_eq!(tensors.images.dims(), [4, 1, 2, 3]);
        assert_eq!(tensors.targets.dims(), [4]);
        let targets: Vec<i64> = tensors
            .targets
            .into_data()
            .convert::<i64>()
            .try_into_vec()
            .unwrap();
        assert_eq!(targets, [0, 1, 2, 0]);
        let images: Vec<f32> = tensors.images.into_data().try_into_vec().unwrap();
        assert_eq!(images, batch.images);
        let alone: Vec<f32> = batch
            .images_tensor(&device)
            .into_data()
            .try_into_vec()
            .unwrap();
        assert_eq!(alone, batch.images);
    }
}
