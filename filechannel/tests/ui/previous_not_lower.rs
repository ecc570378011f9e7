#[derive(filechannel::Message, serde::Serialize, serde::Deserialize)]
#[message(name = "t.Order", version = 2)]
struct OrderV2 {
    id: u64,
}

#[derive(filechannel::Message, serde::Serialize, serde::Deserialize)]
#[message(name = "t.Order", version = 2, previous = OrderV2)]
struct Order {
    id: u64,
}

impl From<OrderV2> for Order {
    fn from(v: OrderV2) -> Self {
        Order { id: v.id }
    }
}

fn main() {}
