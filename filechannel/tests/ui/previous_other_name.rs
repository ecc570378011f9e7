#[derive(filechannel::Message, serde::Serialize, serde::Deserialize)]
#[message(name = "t.Refund", version = 1)]
struct RefundV1 {
    id: u64,
}

#[derive(filechannel::Message, serde::Serialize, serde::Deserialize)]
#[message(name = "t.Order", version = 2, previous = RefundV1)]
struct Order {
    id: u64,
}

impl From<RefundV1> for Order {
    fn from(v: RefundV1) -> Self {
        Order { id: v.id }
    }
}

fn main() {}
