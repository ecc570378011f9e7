#[derive(filechannel::Message)]
enum E {
    A,
    #[message(opaque)]
    B(u32),
}

fn main() {}
