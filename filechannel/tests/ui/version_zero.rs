#[derive(filechannel::Message)]
#[message(name = "t.A", version = 0)]
struct A;

fn main() {}
